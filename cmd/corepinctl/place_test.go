package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corepin/corepin/internal/testpki"
)

// corepinctl place against a placer serving HTTPS and requiring client
// certificates (its --tls-client-ca-file): placed with the right flags,
// refused by the TLS handshake without them, and bad flags named.
func TestPlaceOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA := testpki.NewCA(t, "placer CA"), testpki.NewCA(t, "platform CA")
	serverCAFile := filepath.Join(dir, "placer-ca.crt")
	testpki.Write(t, serverCAFile, serverCA.CertPEM)
	serverCert, serverKey := serverCA.WriteFiles(t, dir, "placer", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	clientCert, clientKey := clientCA.WriteFiles(t, dir, "platform", x509.ExtKeyUsageClientAuth)
	otherCert, otherKey := serverCA.WriteFiles(t, dir, "stranger", x509.ExtKeyUsageClientAuth) // not signed by the platform CA

	var seen []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/placements" || !strings.Contains(string(body), `"name":"db-7"`) {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path+" "+string(body), http.StatusBadRequest)
			return
		}
		seen = append(seen, r.TLS.PeerCertificates[0].Subject.CommonName)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"cluster":"a","namespace":"default","name":"db-7","node":"n1","cpus":"2-3","containers":{"engine":"2-3"},"mems":"0"}`)
	}))
	cert, err := tls.LoadX509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.Cert)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	// JSON, which place reads as it reads YAML.
	file := filepath.Join(dir, "db-7.json")
	if err := os.WriteFile(file, []byte(`{"apiVersion":"corepin.io/v1alpha1","kind":"CPUReservation","metadata":{"name":"db-7","namespace":"default"},
"spec":{"template":{"metadata":{"annotations":{"corepin.io/cpu-mode":"exclusive"}},"spec":{"containers":[{"name":"engine","resources":{"limits":{"cpu":"2"}}}]}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"place", "--placer", srv.URL, "-f", file}
	for _, tc := range []struct {
		name    string
		flags   []string
		code    int
		wantOut string // in stdout (code 0) or stderr
	}{
		{"placed", []string{"--certificate-authority", serverCAFile, "--client-certificate", clientCert, "--client-key", clientKey}, 0, `"cpus":"2-3"`},
		{"no client certificate", []string{"--certificate-authority", serverCAFile}, 1, "certificate required"},
		{"a client certificate the placer does not trust", []string{"--certificate-authority", serverCAFile, "--client-certificate", otherCert, "--client-key", otherKey}, 1, "the placer trusts no CA that signed --client-certificate " + otherCert},
		{"the placer's CA not given", []string{"--client-certificate", clientCert, "--client-key", clientKey}, 1, "certificate signed by unknown authority"},
		{"a key without its certificate", []string{"--client-key", clientKey}, 2, `--client-certificate "" and --client-key "` + clientKey + `": give both or neither`},
		{"TLS flags with a plain http:// placer", []string{"--certificate-authority", serverCAFile, "--placer", "http://placer.example:8890"}, 2, "--placer http://placer.example:8890 is not an https:// URL"},
		{"a CA file without certificates", []string{"--certificate-authority", notPEM}, 2, "--certificate-authority " + notPEM + ": no PEM certificates"},
		{"a missing CA file", []string{"--certificate-authority", filepath.Join(dir, "absent.crt")}, 2, "--certificate-authority: open "},
		{"a certificate and a key that do not match", []string{"--certificate-authority", serverCAFile, "--client-certificate", clientCert, "--client-key", otherKey}, 2, "--client-certificate " + clientCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append(append([]string{}, base...), tc.flags...), &out, &errOut)
			got := errOut.String()
			if tc.code == 0 {
				got = out.String()
			}
			if code != tc.code || !strings.Contains(got, tc.wantOut) {
				t.Fatalf("exit %d, stdout %q, stderr %q: want exit %d and %q", code, out.String(), errOut.String(), tc.code, tc.wantOut)
			}
		})
	}
	if len(seen) != 1 || seen[0] != "platform" {
		t.Errorf("the placer served client certificates %v, want [platform] (the one placement)", seen)
	}
}

//go:build integration

package integration

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/testpki"
	"github.com/corepin/corepin/test/integration/framework"
)

// TestReservationPlacer runs corepin-placer over two real API servers as two
// clusters, each with one 8-CPU node and its own corepin-extender (at most 5
// exclusive CPUs a node). The placer's view runs laxer rules (8 of 8), so
// it proposes what a cluster's extender then refuses: the placer must
// delete that reservation and try the next cluster.
func TestReservationPlacer(t *testing.T) {
	cps := map[string]*framework.ControlPlane{}
	for _, name := range []string{"a", "b"} {
		cp := framework.StartControlPlane(t)
		cp.ApplyReservationCRD(t)
		cp.CreateNodes(t, "1s-vm", nil, name+"-node")
		cp.StartExtender(t)
		cps[name] = cp
	}
	lax := filepath.Join(cps["a"].Dir, "placer.yaml")
	if err := os.WriteFile(lax, []byte("maxExclusiveRatio: 1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := framework.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := framework.Start(t, cps["a"].Dir, "corepin-placer", framework.RepoBinary(t, "corepin-placer"), "--cluster", "a="+cps["a"].Kubeconfig,
		"--cluster", "b="+cps["b"].Kubeconfig, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--config", lax, "--wait", "20s", "-v", "2")
	framework.WaitServing(t, p, http.DefaultClient, url+"/readyz", 60*time.Second)

	post := func(body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(url+"/v1/placements", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("answer %q: %v", data, err)
		}
		return resp.StatusCode, out
	}
	reservation := func(name, cpu string) string {
		return fmt.Sprintf(`{"apiVersion":"corepin.io/v1alpha1","kind":"CPUReservation","metadata":{"namespace":"default","name":%q},
"spec":{"template":{"metadata":{"annotations":{"corepin.io/cpu-mode":"exclusive"}},
"spec":{"containers":[{"name":"engine","resources":{"limits":{"cpu":%q}}}]}}}}`, name, cpu)
	}

	t.Run("corepinctl place fills cluster a first", func(t *testing.T) {
		file := reservationFile(t, t.TempDir(), "r1", "4")
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(framework.RepoBinary(t, "corepinctl"), "place", "--placer", url, "-f", file)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("corepinctl place: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		var got map[string]any
		if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
			t.Fatalf("corepinctl place printed %q: %v", stdout.String(), err)
		}
		if got["cluster"] != "a" || got["node"] != "a-node" || got["containers"].(map[string]any)["engine"] != got["cpus"] {
			t.Fatalf("placed %v, want cluster a (the first of a tie)", got)
		}
		// The cluster's extender holds it: the API shows it Reserved there.
		r := reservations{t, cps["a"].Dynamic}.get("r1")
		if r.Status.Phase != api.ReservationReserved || r.Status.CPUs != got["cpus"] || r.Spec.NodeName != "a-node" {
			t.Fatalf("cluster a shows %+v (nodeName %q)", r.Status, r.Spec.NodeName)
		}
	})

	t.Run("a refusal by the chosen cluster's extender moves to the next cluster", func(t *testing.T) {
		code, got := post(reservation("r2", "2"))
		if code != http.StatusCreated || got["cluster"] != "b" {
			t.Fatalf("r2: %d %v, want 201 in cluster b", code, got)
		}
		framework.Eventually(t, 10*time.Second, "r2 gone from cluster a", func() (bool, error) {
			code, _ := getPlacement(t, url+"/v1/placements/a/default/r2")
			return code == http.StatusNotFound, fmt.Errorf("GET a/default/r2: %d", code)
		})
	})

	t.Run("409 with each cluster's reasons when both are full", func(t *testing.T) {
		code, got := post(reservation("r3", "4"))
		clusters, _ := got["clusters"].(map[string]any)
		if code != http.StatusConflict || got["error"] != "no cluster fits" ||
			!strings.Contains(fmt.Sprint(clusters["a"]), "exclusive limit 5 reached (needs 4, holds 4)") ||
			!strings.Contains(fmt.Sprint(clusters["b"]), "exclusive limit 5 reached (needs 4, holds 2)") {
			t.Fatalf("r3: %d %v", code, got)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct{ body, want string }{
			{`{"metadata":{"namespace":"default","name":"x"},"spec":{"template":{"spec":{"containers":[{"name":"e"}]}},"ttl":5}}`, `unknown field "spec.ttl"`},
			{strings.Replace(reservation("x", "4"), `"exclusive"`, `"shared"`, 1), "not an exclusive pod"},
			{`{"metadata":{"name":"x"}}`, "metadata.namespace: required"},
		} {
			code, got := post(tc.body)
			if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(got["error"]), tc.want) {
				t.Errorf("%s: %d %v, want 400 with %q", tc.body, code, got, tc.want)
			}
		}
		if code, got := getPlacement(t, url+"/v1/placements/c/default/r1"); code != http.StatusNotFound || !strings.Contains(fmt.Sprint(got["error"]), `unknown cluster "c"`) {
			t.Errorf("unknown cluster: %d %v", code, got)
		}
	})

	t.Run("DELETE releases", func(t *testing.T) {
		req, _ := http.NewRequest("DELETE", url+"/v1/placements/a/default/r1", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE: %s", resp.Status)
		}
		// a's 5 are free again: 4 fit there now.
		framework.Eventually(t, 30*time.Second, "r3 placed after r1 was released", func() (bool, error) {
			code, got := post(reservation("r3", "4"))
			return code == http.StatusCreated && got["cluster"] == "a", fmt.Errorf("%d %v", code, got)
		})
	})
}

// TestPlacerMutualTLS runs corepin-placer requiring client certificates
// (--tls-client-ca-file) with --health-listen: corepinctl place with the
// platform's certificate is placed, a client without one is refused at the
// handshake, and the probes' plain listener serves /readyz but no
// placement.
func TestPlacerMutualTLS(t *testing.T) {
	cp := framework.StartControlPlane(t)
	cp.ApplyReservationCRD(t)
	cp.CreateNodes(t, "1s-vm", nil, "a-node")
	cp.StartExtender(t)

	placerCA, platformCA := testpki.NewCA(t, "placer CA"), testpki.NewCA(t, "platform CA")
	caFile, clientCAFile := filepath.Join(cp.Dir, "placer-ca.crt"), filepath.Join(cp.Dir, "platform-ca.crt")
	testpki.Write(t, caFile, placerCA.CertPEM)
	testpki.Write(t, clientCAFile, platformCA.CertPEM)
	serverCert, serverKey := placerCA.WriteFiles(t, cp.Dir, "placer", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	clientCert, clientKey := platformCA.WriteFiles(t, cp.Dir, "platform", x509.ExtKeyUsageClientAuth)

	port, healthPort := framework.FreePort(t), framework.FreePort(t)
	url, health := fmt.Sprintf("https://127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", healthPort)
	p := framework.Start(t, cp.Dir, "corepin-placer", framework.RepoBinary(t, "corepin-placer"), "--cluster", "a="+cp.Kubeconfig,
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--health-listen", fmt.Sprintf("127.0.0.1:%d", healthPort),
		"--tls-cert-file", serverCert, "--tls-key-file", serverKey, "--tls-client-ca-file", clientCAFile, "--wait", "20s")
	// What the kubelet's readiness probe does: plain HTTP, no certificate.
	framework.WaitServing(t, p, http.DefaultClient, health+"/readyz", 60*time.Second)

	file := reservationFile(t, cp.Dir, "db-tls", "2")
	place := func(flags ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(framework.RepoBinary(t, "corepinctl"), append([]string{"place", "--placer", url, "-f", file}, flags...)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}
	if code, _, stderr := place("--certificate-authority", caFile); code != 1 || !strings.Contains(stderr, "certificate required") {
		t.Fatalf("corepinctl place without a client certificate: exit %d, %q; want 1 and the handshake's refusal", code, stderr)
	}
	code, stdout, stderr := place("--certificate-authority", caFile, "--client-certificate", clientCert, "--client-key", clientKey)
	var got map[string]any
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || got["cluster"] != "a" || got["node"] != "a-node" {
		t.Fatalf("corepinctl place with the platform's certificate: exit %d, %q %q; want placed on a-node", code, stdout, stderr)
	}
	if r := (reservations{t, cp.Dynamic}).get("db-tls"); r.Status.Phase != api.ReservationReserved || r.Status.CPUs != got["cpus"] {
		t.Fatalf("cluster a shows %+v, the placer answered %v", r.Status, got)
	}

	// The health listener: metrics, and never the placement API.
	resp, err := http.Get(health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `corepin_placer_placements_total{result="placed"} 1`) {
		t.Errorf("/metrics on the health listener lacks the placement: %.400s", metrics)
	}
	if code, _ := getPlacement(t, health+"/v1/placements/a/default/db-tls"); code != http.StatusNotFound {
		t.Errorf("GET a placement on the health listener: %d, want 404", code)
	}
}

// reservationFile writes NAME.yaml in dir, as an operator would for
// corepinctl place: CPUReservation default/NAME of one exclusive container
// of cpu CPUs.
func reservationFile(t *testing.T, dir, name, cpu string) string {
	t.Helper()
	file := filepath.Join(dir, name+".yaml")
	yaml := fmt.Sprintf(`apiVersion: corepin.io/v1alpha1
kind: CPUReservation
metadata: {name: %s, namespace: default}
spec:
  template:
    metadata: {annotations: {corepin.io/cpu-mode: exclusive}}
    spec:
      containers:
      - {name: engine, resources: {limits: {cpu: %q}}}
`, name, cpu)
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func getPlacement(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// runPlace is `corepinctl place --placer URL -f FILE`: it sends the
// CPUReservation in FILE (YAML or JSON, "-" for stdin) to corepin-placer
// and prints the answer's JSON. Exit 0 when placed (201), 1 when the
// placer refused it (the answer says why), 2 on bad usage. An https URL
// verifies the placer's certificate (--certificate-authority, else the
// system's roots) and presents --client-certificate to a placer that
// requires one (--tls-client-ca-file), as kubectl's flags of those names.
func runPlace(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("place", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("placer", "", "corepin-placer's URL (http://host:port)")
	file := fs.String("f", "", "the CPUReservation to place, YAML or JSON (- for stdin)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the answer")
	caFile := fs.String("certificate-authority", "", "verify an https placer's certificate with this CA (PEM) instead of the system's roots")
	certFile := fs.String("client-certificate", "", "present this client certificate (PEM) to a placer requiring one; with --client-key")
	keyFile := fs.String("client-key", "", "the client certificate's key (PEM)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *url == "" || *file == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: corepinctl place --placer URL -f FILE [--certificate-authority CA] [--client-certificate CERT --client-key KEY]")
		return 2
	}
	var data []byte
	var err error
	if *file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl place: %v\n", err)
		return 2
	}
	body, err := yaml.YAMLToJSON(data)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl place: %s: %v\n", *file, err)
		return 2
	}
	tlsConfig, err := placeTLS(*caFile, *certFile, *keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl place: %v\n", err)
		return 2
	}
	if tlsConfig != nil && !strings.HasPrefix(*url, "https://") {
		fmt.Fprintf(stderr, "corepinctl place: --placer %s is not an https:// URL, which --certificate-authority and --client-certificate need\n", *url)
		return 2
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: tlsConfig}}
	resp, err := client.Post(strings.TrimSuffix(*url, "/")+"/v1/placements", "application/json", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl place: %v\n", err)
		if *certFile != "" && (strings.Contains(err.Error(), "certificate required") || strings.Contains(err.Error(), "bad certificate")) {
			// Go sends a client certificate only when a CA the server names signed it.
			// TLS 1.3 alerts "certificate required", 1.2 "bad certificate".
			fmt.Fprintf(stderr, "corepinctl place: the placer trusts no CA that signed --client-certificate %s (see its --tls-client-ca-file)\n", *certFile)
		}
		return 1
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl place: reading the answer: %v\n", err)
		return 1
	}
	_, _ = stdout.Write(answer)
	if resp.StatusCode != http.StatusCreated {
		fmt.Fprintf(stderr, "corepinctl place: %s\n", resp.Status)
		return 1
	}
	return 0
}

// placeTLS is the client side of corepin-placer's TLS flags; nil without
// any (the system's roots, no client certificate).
func placeTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("--client-certificate %q and --client-key %q: give both or neither", certFile, keyFile)
	}
	if caFile == "" && certFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--certificate-authority: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--certificate-authority %s: no PEM certificates", caFile)
		}
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--client-certificate %s, --client-key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

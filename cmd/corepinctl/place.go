package main

import (
	"bytes"
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
// placer refused it (the answer says why), 2 on bad usage.
func runPlace(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("place", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("placer", "", "corepin-placer's URL (http://host:port)")
	file := fs.String("f", "", "the CPUReservation to place, YAML or JSON (- for stdin)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *url == "" || *file == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: corepinctl place --placer URL -f FILE")
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
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Post(strings.TrimSuffix(*url, "/")+"/v1/placements", "application/json", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl place: %v\n", err)
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

package extender

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the simulation golden files")

// TestScenarios runs every committed scenario and compares the output with
// its reviewed golden file (testdata/scenarios/NAME.golden).
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/scenarios/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := ParseScenario(data)
			var out bytes.Buffer
			if strings.HasPrefix(name, "malformed") {
				// The golden file holds the exact message a user reads: a
				// scenario refused for another reason, or with a vaguer
				// wording, fails here.
				if !errors.Is(err, ErrMalformedScenario) {
					t.Fatalf("malformed scenario accepted: %v", err)
				}
				out.WriteString(err.Error() + "\n")
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if err := Simulate(sc, &out); err != nil {
					t.Fatal(err)
				}
			}
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != string(want) {
				t.Fatalf("output differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
			if sc == nil {
				return
			}
			if lines := strings.Count(out.String(), "\n"); lines != len(sc.Steps) {
				t.Fatalf("%d output lines for %d steps", lines, len(sc.Steps))
			}
		})
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestPercentileNearestRank(t *testing.T) {
	v := make([]float64, 1000)
	for i := range v {
		v[i] = float64(i + 1)
	}
	for p, want := range map[float64]float64{0.5: 500, 0.99: 990, 0.999: 999, 1: 1000} {
		if got := percentile(v, p); got != want {
			t.Errorf("percentile(1..1000, %v) = %v, want %v", p, got, want)
		}
	}
	if got := percentile([]float64{7}, 0.999); got != 7 {
		t.Errorf("percentile of one value = %v", got)
	}
}

// pgbench's log: time is the third field in microseconds; a failed
// transaction's is not a number.
func TestPgbenchFromLog(t *testing.T) {
	dir := t.TempDir()
	var log strings.Builder
	for i := 1; i <= 100; i++ {
		log.WriteString("0 " + itoa(i) + " " + itoa(i*1000) + " 0 1700000000 123456\n")
	}
	log.WriteString("1 101 failed 0 1700000001 1\n")
	path := filepath.Join(dir, "pgbench_log.1")
	if err := os.WriteFile(path, []byte(log.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cmdPgbench([]string{"--row", "alone", "--workload", "ro", "--round", "2", "--tps", "1234.5", path}, &out); err != nil {
		t.Fatal(err)
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	want := Result{Row: "alone", Workload: "ro", Round: 2, TPS: 1234.5, P50: 50, P99: 99, P999: 100, N: 100}
	if r != want {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	if err := os.WriteFile(path, []byte("not a log\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmdPgbench([]string{"--row", "alone", "--workload", "ro", path}, &out); err == nil || !strings.Contains(err.Error(), "not a pgbench --log line") {
		t.Fatalf("a malformed log: err %v", err)
	}
}

// The last line is contract section 11's object, each figure the median of
// its rounds, the read-only run's.
func TestSummaryContractLine(t *testing.T) {
	var lines []string
	add := func(r Result) {
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
	}
	for round, p99 := range []float64{3, 1, 2} {
		for _, row := range []string{"alone", "shared_noisy", "corepin_noisy", "static_noisy"} {
			add(Result{Row: row, Workload: "ro", Round: round + 1, TPS: 100 * p99, P50: 0.5, P99: p99, P999: 2 * p99, N: 10})
			add(Result{Row: row, Workload: "tpcb", Round: round + 1, TPS: 1, P50: 9, P99: 99, P999: 999, N: 10})
		}
		for _, p := range []string{"alone", "corepin", "static"} {
			add(Result{Row: p, Workload: "startup", Round: round + 1, WorstMs: 10 * p99, MedianMs: 1})
		}
	}
	path := filepath.Join(t.TempDir(), "results.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cmdSummary([]string{path}, &out); err != nil {
		t.Fatal(err)
	}
	all := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := all[len(all)-1]
	want := `{"alone":{"tps":200,"p50_ms":0.5,"p99_ms":2,"p999_ms":4},"shared_noisy":{"tps":200,"p50_ms":0.5,"p99_ms":2,"p999_ms":4},` +
		`"corepin_noisy":{"tps":200,"p50_ms":0.5,"p99_ms":2,"p999_ms":4},"static_noisy":{"tps":200,"p50_ms":0.5,"p99_ms":2,"p999_ms":4},` +
		`"startup":{"alone_worst_ms":20,"corepin_worst_ms":20,"static_worst_ms":20}}`
	if last != want {
		t.Fatalf("last line\n%s\nwant\n%s", last, want)
	}
	if !strings.Contains(out.String(), "| corepin_noisy | 2 | 100.0 |") {
		t.Errorf("the tables lack round 2 of corepin_noisy:\n%s", out.String())
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

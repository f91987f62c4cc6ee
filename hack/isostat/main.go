// Command isostat does the arithmetic of make bench-isolation
// (hack/bench-isolation.sh): latency percentiles from pgbench's
// per-transaction logs, and the summary of all rounds, whose last line is
// contract section 11's JSON.
//
//	isostat pgbench --row R --workload W --round N --tps X LOG...   one result line (JSON)
//	isostat summary RESULTS.jsonl                                   the tables, the targets, the contract line
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: isostat pgbench|summary ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "pgbench":
		err = cmdPgbench(os.Args[2:], os.Stdout)
	case "summary":
		err = cmdSummary(os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q (want pgbench or summary)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "isostat:", err)
		os.Exit(1)
	}
}

// Result is one measured row of one round; R's fields are contract
// section 11's.
type Result struct {
	Row      string  `json:"row"`
	Workload string  `json:"workload"`
	Round    int     `json:"round"`
	TPS      float64 `json:"tps"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	P999     float64 `json:"p999_ms"`
	N        int     `json:"transactions"`
	// Probe rows (workload "startup") carry the probe's output instead.
	WorstMs   float64 `json:"worst_ms,omitempty"`
	WorstAtMs float64 `json:"worst_at_ms,omitempty"`
	MedianMs  float64 `json:"median_ms,omitempty"`
}

func cmdPgbench(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("pgbench", flag.ContinueOnError)
	var r Result
	fs.StringVar(&r.Row, "row", "", "row name (alone, shared_noisy, ...)")
	fs.StringVar(&r.Workload, "workload", "", "ro or tpcb")
	fs.IntVar(&r.Round, "round", 0, "round number")
	fs.Float64Var(&r.TPS, "tps", 0, "pgbench's tps (without initial connection time)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if r.Row == "" || r.Workload == "" || fs.NArg() == 0 {
		return errors.New("pgbench needs --row, --workload and at least one log file")
	}
	var lat []float64
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		l, err := readLog(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		lat = append(lat, l...)
	}
	if len(lat) == 0 {
		return fmt.Errorf("no transactions in %s", strings.Join(fs.Args(), " "))
	}
	slices.Sort(lat)
	r.N = len(lat)
	r.P50, r.P99, r.P999 = percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 0.999)
	return json.NewEncoder(out).Encode(r)
}

// readLog returns the latencies (ms) of pgbench --log's lines:
// "client_id transaction_no time script_no time_epoch time_us [schedule_lag]",
// time in microseconds. Failed or skipped transactions (time not a number)
// are not latencies and are left out.
func readLog(r io.Reader) ([]float64, error) {
	var lat []float64
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			return nil, fmt.Errorf("line %d: %q is not a pgbench --log line", n, sc.Text())
		}
		us, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			continue
		}
		lat = append(lat, us/1000)
	}
	return lat, sc.Err()
}

// percentile is the nearest-rank percentile of sorted values: the smallest
// value with at least p of the values at or below it.
func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// R is contract section 11's row object.
type R struct {
	TPS  float64 `json:"tps"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
}

// Startup is contract section 11's start-up window object.
type Startup struct {
	Alone   float64 `json:"alone_worst_ms"`
	Corepin float64 `json:"corepin_worst_ms"`
	Static  float64 `json:"static_worst_ms"`
}

// Contract is the last line of make bench-isolation.
type Contract struct {
	Alone        R       `json:"alone"`
	SharedNoisy  R       `json:"shared_noisy"`
	CorepinNoisy R       `json:"corepin_noisy"`
	StaticNoisy  R       `json:"static_noisy"`
	Startup      Startup `json:"startup"`
}

// contractWorkload is the pgbench run the contract line reports: the
// read-only one, the CPU-bound case (the TPC-B-like figures are in the
// tables).
const contractWorkload = "ro"

var rowOrder = []string{"alone", "shared_noisy", "corepin_noisy", "static_noisy", "release_off", "release_on"}

func cmdSummary(args []string, out io.Writer) error {
	if len(args) != 1 {
		return errors.New("summary needs the results file")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	var results []Result
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	for {
		var r Result
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("%s: %w", args[0], err)
		}
		results = append(results, r)
	}
	c, err := summarize(results, out)
	if err != nil {
		return err
	}
	line, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(line))
	return err
}

// summarize writes the per-round tables and the targets' ratios, and
// returns the contract line: for each figure the median of its rounds.
func summarize(results []Result, out io.Writer) (Contract, error) {
	by := map[string][]Result{} // "row/workload"
	for _, r := range results {
		by[r.Row+"/"+r.Workload] = append(by[r.Row+"/"+r.Workload], r)
	}
	med := func(row, workload string, get func(Result) float64) float64 {
		var v []float64
		for _, r := range by[row+"/"+workload] {
			v = append(v, get(r))
		}
		return median(v)
	}
	rowOf := func(row, workload string) R {
		return R{TPS: round1(med(row, workload, func(r Result) float64 { return r.TPS })),
			P50:  round3(med(row, workload, func(r Result) float64 { return r.P50 })),
			P99:  round3(med(row, workload, func(r Result) float64 { return r.P99 })),
			P999: round3(med(row, workload, func(r Result) float64 { return r.P999 }))}
	}
	for _, w := range []string{"ro", "tpcb"} {
		if !slices.ContainsFunc(results, func(r Result) bool { return r.Workload == w }) {
			continue
		}
		fmt.Fprintf(out, "\npgbench %s (each round; median last)\n", w)
		fmt.Fprintf(out, "| row | round | tps | p50 ms | p99 ms | p99.9 ms | transactions |\n|---|---|---|---|---|---|---|\n")
		for _, row := range rowOrder {
			rs := by[row+"/"+w]
			if len(rs) == 0 {
				continue
			}
			for _, r := range rs {
				fmt.Fprintf(out, "| %s | %d | %.1f | %.3f | %.3f | %.3f | %d |\n", row, r.Round, r.TPS, r.P50, r.P99, r.P999, r.N)
			}
			m := rowOf(row, w)
			fmt.Fprintf(out, "| **%s** | median | %.1f | %.3f | %.3f | %.3f | |\n", row, m.TPS, m.P50, m.P99, m.P999)
		}
	}
	fmt.Fprintf(out, "\nstart-up window probe (worst iteration in the first 10 s)\n")
	fmt.Fprintf(out, "| case | round | worst ms | at ms | median iteration ms |\n|---|---|---|---|---|\n")
	for _, p := range []string{"alone", "corepin", "static"} {
		for _, r := range by[p+"/startup"] {
			fmt.Fprintf(out, "| %s | %d | %.3f | %.0f | %.3f |\n", p, r.Round, r.WorstMs, r.WorstAtMs, r.MedianMs)
		}
	}
	worst := func(p string) float64 { return round3(med(p, "startup", func(r Result) float64 { return r.WorstMs })) }
	c := Contract{Alone: rowOf("alone", contractWorkload), SharedNoisy: rowOf("shared_noisy", contractWorkload),
		CorepinNoisy: rowOf("corepin_noisy", contractWorkload), StaticNoisy: rowOf("static_noisy", contractWorkload),
		Startup: Startup{Alone: worst("alone"), Corepin: worst("corepin"), Static: worst("static")}}

	fmt.Fprintf(out, "\ntargets (medians, pgbench %s)\n", contractWorkload)
	target := func(name string, got, limit float64, le bool) {
		ok := got <= limit
		if !le {
			ok = got >= limit
		}
		verdict := map[bool]string{true: "met", false: "MISSED"}[ok]
		op := map[bool]string{true: "<=", false: ">="}[le]
		fmt.Fprintf(out, "- %s: %.2f %s %.2f: %s\n", name, got, op, limit, verdict)
	}
	target("corepin_noisy.p99 / alone.p99", ratio(c.CorepinNoisy.P99, c.Alone.P99), 1.2, true)
	target("shared_noisy.p99 / corepin_noisy.p99", ratio(c.SharedNoisy.P99, c.CorepinNoisy.P99), 5, false)
	target("corepin_noisy.p99 / static_noisy.p99", ratio(c.CorepinNoisy.P99, c.StaticNoisy.P99), 1.05, true)
	target("startup corepin_worst / alone_worst", ratio(c.Startup.Corepin, c.Startup.Alone), 1.1, true)
	on, off := rowOf("release_on", contractWorkload), rowOf("release_off", contractWorkload)
	fmt.Fprintf(out, "- release switch under the noise: tps %.1f released, %.1f pinned\n", on.TPS, off.TPS)
	return c, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// median of the values (the mean of the middle two for an even count); 0
// when there are none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

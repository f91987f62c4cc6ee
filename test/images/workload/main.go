// Command workload is the test image's only program. As the entrypoint it
// prints the CPUs it may run on as its very first action, then sleeps; with
// the argument "status" it prints them and exits (for exec); with "pause" it
// only sleeps (the sandbox image); with "spin [DURATION]" it is the start-up
// window probe of make bench-isolation: a fixed CPU-bound loop, each
// iteration timed, for DURATION (default 10s), then one JSON line.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	if mode == "spin" {
		d := 10 * time.Second
		if len(os.Args) > 2 {
			var err error
			if d, err = time.ParseDuration(os.Args[2]); err != nil || d <= 0 {
				fmt.Fprintf(os.Stderr, "workload spin: duration %q: want a positive Go duration such as 10s\n", os.Args[2])
				os.Exit(2)
			}
		}
		out, _ := json.Marshal(spin(d, spinWork))
		fmt.Println(string(out))
		return
	}
	if mode != "pause" {
		printStatus()
		if mode == "status" {
			return
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// printStatus prints Cpus_allowed_list and Mems_allowed_list from
// /proc/self/status, and the cpuset cgroup's CPUs and the CFS quota as this
// process sees them.
func printStatus() {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "Cpus_allowed_list:") || strings.HasPrefix(line, "Mems_allowed_list:") {
			fmt.Println(line)
		}
	}
	for _, path := range []string{"/sys/fs/cgroup/cpuset/cpuset.cpus", "/sys/fs/cgroup/cpuset.cpus.effective"} {
		if data, err := os.ReadFile(path); err == nil {
			fmt.Printf("cgroup_cpuset:\t%s\n", strings.TrimSpace(string(data)))
			break
		}
	}
	// The CFS quota: cgroup v1's cfs_quota_us, or v2's cpu.max ("max" or
	// "QUOTA PERIOD"; "max" is printed as -1 like v1).
	if data, err := os.ReadFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"); err == nil {
		fmt.Printf("cfs_quota:\t%s\n", strings.TrimSpace(string(data)))
	} else if data, err := os.ReadFile("/sys/fs/cgroup/cpu.max"); err == nil {
		quota := strings.Fields(string(data))[0]
		if quota == "max" {
			quota = "-1"
		}
		fmt.Printf("cfs_quota:\t%s\n", quota)
	}
}

// spinWork is one probe iteration: about a millisecond of integer work on
// the 2-vCPU test VM, short enough that a few milliseconds lost to another
// task on the CPU stand out against it.
const spinWork = 1 << 20

// spinResult is what the probe prints: the slowest iteration, when it
// happened (from the probe's start), and the median as the iteration's
// undisturbed cost on this CPU.
type spinResult struct {
	Iterations int     `json:"iterations"`
	WorstMs    float64 `json:"worst_ms"`
	WorstAtMs  float64 `json:"worst_at_ms"`
	MedianMs   float64 `json:"median_ms"`
	Sum        uint64  `json:"sum"` // the loop's result, printed so the compiler keeps the loop
}

// spin runs iterations of work steps of a linear congruential generator for
// d and times each one. The durations go into a slice allocated up front so
// that the garbage collector has nothing to do while it runs.
func spin(d time.Duration, work int) spinResult {
	took := make([]time.Duration, 0, 1<<17)
	x := uint64(1)
	var worst, worstAt time.Duration
	start := time.Now()
	for since := time.Duration(0); since < d; since = time.Since(start) {
		t := time.Now()
		for i := 0; i < work; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		el := time.Since(t)
		if el > worst {
			worst, worstAt = el, t.Sub(start)
		}
		if len(took) < cap(took) {
			took = append(took, el)
		}
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	r := spinResult{Iterations: len(took), WorstMs: ms(worst), WorstAtMs: ms(worstAt), Sum: x}
	if len(took) > 0 {
		r.MedianMs = ms(took[len(took)/2])
	}
	return r
}

// Command workload is the test image's only program. As the entrypoint it
// prints the CPUs it may run on as its very first action, then sleeps; with
// the argument "status" it prints them and exits (for exec); with "pause" it
// only sleeps (the sandbox image).
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
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

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
// /proc/self/status and the cpuset cgroup's CPUs as this process sees them.
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
}

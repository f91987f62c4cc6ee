package topology

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// DefaultQueuePatterns match the per-queue IRQ names of common NIC and block
// drivers: virtio-net and virtio-blk, NVMe, Mellanox mlx5, and the
// "-TxRx-"/"-rx-"/"-tx-" names of Intel and Broadcom NICs.
var DefaultQueuePatterns = []string{
	"virtio*-input.*", "virtio*-output.*", "virtio*-req.*",
	"nvme*q*", "mlx5_comp*", "*-TxRx-*", "*-rx-*", "*-tx-*",
}

// irq is one line of /proc/interrupts.
type irq struct {
	number int
	name   string
}

// ParseInterrupts reads /proc/interrupts: numbered IRQ lines and the device
// name that ends each (architecture lines such as NMI or LOC are skipped).
func ParseInterrupts(r io.Reader) ([]irq, error) {
	var out []irq
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		head, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(head))
		if err != nil || n < 0 {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		out = append(out, irq{number: n, name: fields[len(fields)-1]})
	}
	return out, sc.Err()
}

// DiscoverIOQueues finds the IO-queue IRQs whose names match the patterns
// and the online CPUs their interrupts go to (effective_affinity_list, else
// smp_affinity_list). Queues with no online CPU are skipped. When two IRQs
// share a name, the later ones are named NAME@IRQ so names stay unique.
func DiscoverIOQueues(procRoot string, online cpuset.CPUSet, patterns []string) ([]api.IOQueue, error) {
	if patterns == nil {
		patterns = DefaultQueuePatterns
	}
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("IO queue pattern %q: %w", p, err)
		}
	}
	f, err := os.Open(filepath.Join(procRoot, "interrupts"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	irqs, err := ParseInterrupts(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	var queues []api.IOQueue
	names := map[string]bool{}
	for _, q := range irqs {
		if !matchAny(patterns, q.name) {
			continue
		}
		cpus, err := irqAffinity(procRoot, q.number)
		if err != nil {
			return nil, err
		}
		cpus = cpus.Intersection(online)
		if cpus.IsEmpty() {
			continue
		}
		name := q.name
		if names[name] {
			name = fmt.Sprintf("%s@%d", q.name, q.number)
		}
		names[name] = true
		queues = append(queues, api.IOQueue{Name: name, CPUs: api.NewCPUList(cpus)})
	}
	sort.Slice(queues, func(i, j int) bool { return queues[i].Name < queues[j].Name })
	return queues, nil
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

func irqAffinity(procRoot string, n int) (cpuset.CPUSet, error) {
	dir := filepath.Join(procRoot, "irq", strconv.Itoa(n))
	set, err := readCPUList(filepath.Join(dir, "effective_affinity_list"))
	if err == nil && !set.IsEmpty() {
		return set, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return set, err
	}
	set, err = readCPUList(filepath.Join(dir, "smp_affinity_list"))
	if errors.Is(err, os.ErrNotExist) {
		return cpuset.New(), nil
	}
	return set, err
}

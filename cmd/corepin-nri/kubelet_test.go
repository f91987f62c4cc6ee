package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kindKubeletConfig is the head of the file kind's kubeadm writes to
// /var/lib/kubelet/config.yaml, with reservedSystemCPUs added.
const kindKubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
cgroupDriver: systemd
cgroupRoot: /kubelet
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
cpuManagerReconcilePeriod: 0s
evictionHard:
  imagefs.available: 0%
  nodefs.available: 0%
kind: KubeletConfiguration
someFieldOfANewerKubelet: true
`

func TestReservedCPUsFromTheKubelet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kubelet *string // KUBELET-ROOT/config.yaml; nil: none
		args    []string
		options string // the plugin's --config file, if any
		want    string // the reserved CPUs, or with err the error's parts
		from    string
		err     bool
	}{
		{name: "no kubelet file, no flag: none", want: "", from: "no kubelet configuration at KUBELET/config.yaml"},
		{name: "no kubelet file: the flag", args: []string{"--reserved-cpus", "0-1"}, want: "0-1"},
		{name: "the kubelet's by default", kubelet: ptr(kindKubeletConfig + "reservedSystemCPUs: 0,1,4\n"), want: "0-1,4", from: "reservedSystemCPUs in KUBELET/config.yaml"},
		{name: "the same set written otherwise", kubelet: ptr(kindKubeletConfig + "reservedSystemCPUs: 0-1,4\n"), args: []string{"--reserved-cpus", "4,0,1"}, want: "0-1,4"},
		{name: "another set: refused", kubelet: ptr(kindKubeletConfig + "reservedSystemCPUs: \"0-1\"\n"), args: []string{"--reserved-cpus", "0-3"}, err: true,
			want: `--reserved-cpus "0-3" disagrees with the kubelet's reservedSystemCPUs "0-1" in KUBELET/config.yaml`},
		{name: "explicitly none: refused", kubelet: ptr(kindKubeletConfig + "reservedSystemCPUs: \"0\"\n"), args: []string{"--reserved-cpus="}, err: true,
			want: `--reserved-cpus "" disagrees with the kubelet's reservedSystemCPUs "0" in KUBELET/config.yaml`},
		{name: "another set in the plugin's file: refused", kubelet: ptr(kindKubeletConfig + "reservedSystemCPUs: \"0\"\n"), options: "reservedCPUs: \"1\"\n", err: true,
			want: `--reserved-cpus "1" disagrees with the kubelet's reservedSystemCPUs "0"`},
		{name: "the plugin's file agrees", kubelet: ptr(kindKubeletConfig + "reservedSystemCPUs: \"0\"\n"), options: "reservedCPUs: \"0\"\n", want: "0"},
		{name: "kubelet sets none: the flag", kubelet: ptr(kindKubeletConfig), args: []string{"--reserved-cpus", "0-1"}, want: "0-1", from: "KUBELET/config.yaml sets no reservedSystemCPUs"},
		{name: "JSON (EKS writes config.json)", kubelet: ptr(`{"kind":"KubeletConfiguration","apiVersion":"kubelet.config.k8s.io/v1beta1","reservedSystemCPUs":"2-3"}`), want: "2-3"},
		{name: "malformed YAML", kubelet: ptr("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: [\n"), err: true, want: "kubelet configuration KUBELET/config.yaml: "},
		{name: "wrong type", kubelet: ptr(kindKubeletConfig + "reservedSystemCPUs: [0, 1]\n"), err: true, want: "kubelet configuration KUBELET/config.yaml: "},
		{name: "not a CPU list", kubelet: ptr(kindKubeletConfig + "reservedSystemCPUs: two\n"), err: true,
			want: `kubelet configuration KUBELET/config.yaml: reservedSystemCPUs "two": invalid CPU list "two"`},
		{name: "not a KubeletConfiguration", kubelet: ptr("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"), err: true,
			want: `kubelet configuration KUBELET/config.yaml: apiVersion "kubeadm.k8s.io/v1beta4", kind "ClusterConfiguration": want apiVersion kubelet.config.k8s.io/v1beta1, kind KubeletConfiguration`},
		{name: "named file missing", args: []string{"--kubelet-config", "KUBELET/elsewhere.yaml"}, err: true, want: "KUBELET/elsewhere.yaml: no such file or directory"},
		{name: "named file", kubelet: ptr("kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\nreservedSystemCPUs: \"7\"\n"),
			args: []string{"--kubelet-config", "KUBELET/config.yaml"}, want: "7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.kubelet != nil {
				if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(*tc.kubelet), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"--kubelet-root", dir}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "KUBELET", dir))
			}
			if tc.options != "" {
				file := filepath.Join(t.TempDir(), "10-corepin.conf")
				if err := os.WriteFile(file, []byte(tc.options), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", file)
			}
			o, err := load(args)
			if err != nil {
				t.Fatal(err)
			}
			cpus, from, err := o.reservedCPUs()
			want := strings.ReplaceAll(tc.want, "KUBELET", dir)
			switch {
			case tc.err && err == nil:
				t.Fatalf("accepted: %s from %s", cpus, from)
			case tc.err && !strings.Contains(err.Error(), want):
				t.Fatalf("error %q, want %q", err, want)
			case !tc.err && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.err && cpus.String() != want:
				t.Fatalf("reserved %q (from %s), want %q", cpus, from, want)
			case !tc.err && !strings.Contains(from, strings.ReplaceAll(tc.from, "KUBELET", dir)):
				t.Fatalf("from %q, want %q", from, tc.from)
			}
		})
	}
}

func TestKubeletConfigUnreadable(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be: read fails whoever runs the test.
	if err := os.Mkdir(filepath.Join(dir, "config.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := load([]string{"--kubelet-root", dir})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = o.reservedCPUs()
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "config.yaml")) {
		t.Fatalf("error %v, want one naming %s", err, filepath.Join(dir, "config.yaml"))
	}
}

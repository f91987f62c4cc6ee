package plugin

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
)

func TestGroupPath(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "/kubepods/burstable/pod1/abc", want: "/kubepods/burstable/pod1/abc"},
		{in: "kubepods/besteffort/pod2/def", want: "/kubepods/besteffort/pod2/def"},
		{in: "kubepods-burstable-pod1.slice:cri-containerd:abc", want: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"},
		{in: "system.slice:corepin:x", want: "/system.slice/corepin-x.scope"},
		{in: "-.slice::x", want: "/x.scope"},
		{in: "", err: `no cgroups path`},
		{in: "kubepods--x.slice:cri:abc", err: `slice "kubepods--x.slice" has an empty component`},
		{in: "notaslice:cri:abc", err: `slice "notaslice" is not a systemd slice name`},
		{in: "/kubepods/../../etc", err: `cgroups path "/kubepods/../../etc": not a cgroup path`},
	} {
		got, err := GroupPath(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("GroupPath(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("GroupPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCgroupReader(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode cgroups.CGMode
		file string
	}{
		{"cgroup v1", cgroups.Legacy, "cpuset/kubepods/pod1/abc/cpuset.cpus"},
		{"cgroup v2", cgroups.Unified, "kubepods/pod1/abc/cpuset.cpus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			file := filepath.Join(root, tc.file)
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte("2-3,6\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r := CgroupReader{Root: root, Mode: tc.mode}
			got, err := r.CPUs(&Container{CgroupsPath: "/kubepods/pod1/abc"})
			if err != nil || got.String() != "2-3,6" {
				t.Fatalf("CPUs = %s, %v; want 2-3,6", got, err)
			}
			if _, err := r.CPUs(&Container{CgroupsPath: "/kubepods/pod1/gone"}); err == nil {
				t.Fatal("a missing cgroup read without error")
			}
			if err := os.WriteFile(file, []byte("2-x\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := r.CPUs(&Container{CgroupsPath: "/kubepods/pod1/abc"}); err == nil || !strings.Contains(err.Error(), file) {
				t.Fatalf("a garbled cpuset.cpus: %v, want an error naming %s", err, file)
			}
		})
	}
}

func FuzzGroupPath(f *testing.F) {
	for _, s := range []string{"/kubepods/pod1/abc", "kubepods-burstable-pod1.slice:cri-containerd:abc", "-.slice::x", "a:b", "..", "x.slice:y:../z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := GroupPath(in)
		if err != nil {
			return
		}
		if got == "" || got[0] != '/' || filepath.Clean(got) != got || slices.Contains(strings.Split(got, "/"), "..") {
			t.Fatalf("GroupPath(%q) = %q: not a clean absolute path", in, got)
		}
	})
}

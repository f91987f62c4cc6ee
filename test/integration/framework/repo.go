package framework

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// RepoRoot is the checkout this package was compiled from.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// RepoBinary is a binary built by `make build` into the checkout's bin/.
func RepoBinary(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(RepoRoot(), "bin", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s: %v (run `make build`)", path, err)
	}
	return path
}

// BuildBinary compiles the package pkg of this checkout statically into
// dir and returns the binary's path.
func BuildBinary(t testing.TB, dir, pkg string) string {
	t.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, out)
	}
	return bin
}

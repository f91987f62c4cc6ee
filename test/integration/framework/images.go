package framework

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/corepin/corepin/internal/ociimage"
)

// Test image references. The pause image is the sandbox image containerd
// v2 expects, so no image is ever pulled.
const (
	PauseImage    = "registry.k8s.io/pause:3.10"
	WorkloadImage = "corepin.io/test/workload:latest"
)

// BuildTestImages compiles test/images/workload statically and writes the
// pause and workload images as image tarballs into dir, returning their paths.
func BuildTestImages(t testing.TB, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(BuildBinary(t, dir, "./test/images/workload"))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, img := range []struct {
		ref        string
		entrypoint []string
	}{{PauseImage, []string{"/workload", "pause"}}, {WorkloadImage, []string{"/workload"}}} {
		path := filepath.Join(dir, filepath.Base(img.ref)+".tar")
		writeImage(t, path, img.ref, data, img.entrypoint)
		paths = append(paths, path)
	}
	return paths
}

// writeImage builds a one-layer linux/amd64 image holding /workload.
func writeImage(t testing.TB, path, ref string, binary []byte, entrypoint []string) {
	t.Helper()
	im := ociimage.Image{Ref: ref, Files: map[string][]byte{"workload": binary}, Entrypoint: entrypoint}
	if err := ociimage.WriteTarball(path, im); err != nil {
		t.Fatal(err)
	}
}

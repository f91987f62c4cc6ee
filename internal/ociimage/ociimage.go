// Package ociimage writes single-layer linux/amd64 images of static
// binaries as image tarballs (importable with `ctr images import` or `kind
// load image-archive`), with go-containerregistry: no Docker, no registry.
package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Image is what goes into one image.
type Image struct {
	// Ref is the image reference it is tagged with, e.g. corepin/corepin-nri:dev.
	Ref string
	// Files maps a path in the image (relative to /, e.g.
	// usr/local/bin/kube-scheduler) to its content; every file is
	// executable, and its parent directories are created.
	Files      map[string][]byte
	Entrypoint []string
	// Env is the image's environment (PATH=...), as public images set it.
	Env []string
	// Base, when set, is a root filesystem layer (a tar file) under the
	// files: kube-proxy's image needs iptables and its libraries.
	Base string
}

// defaultPath is the PATH of the distroless images Kubernetes ships.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Build returns the image.
func Build(im Image) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(im.Files))
	for p := range im.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	// /tmp as in every public base image (world-writable, sticky), and the
	// parents of each file.
	dirs := map[string]bool{"tmp": true}
	if err := tw.WriteHeader(&tar.Header{Name: "tmp/", Mode: 0o1777, Typeflag: tar.TypeDir}); err != nil {
		return nil, err
	}
	for _, p := range paths {
		var parents []string
		for d := path.Dir(p); d != "." && d != "/" && !dirs[d]; d = path.Dir(d) {
			parents = append(parents, d)
			dirs[d] = true
		}
		for i := len(parents) - 1; i >= 0; i-- {
			if err := tw.WriteHeader(&tar.Header{Name: parents[i] + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
				return nil, err
			}
		}
		if strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("file %q: paths are relative to the image's root", p)
		}
		data := im.Files[p]
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerData := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerData)), nil })
	if err != nil {
		return nil, err
	}
	layers := []v1.Layer{layer}
	if im.Base != "" {
		base, err := tarball.LayerFromFile(im.Base)
		if err != nil {
			return nil, fmt.Errorf("base layer %s: %w", im.Base, err)
		}
		layers = []v1.Layer{base, layer}
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Entrypoint = im.Entrypoint
	cfg.Config.Env = im.Env
	if len(cfg.Config.Env) == 0 {
		cfg.Config.Env = []string{defaultPath}
	}
	return mutate.ConfigFile(img, cfg)
}

// WriteTarball builds the image and writes it to path.
func WriteTarball(path string, im Image) error {
	tag, err := name.NewTag(im.Ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", im.Ref, err)
	}
	img, err := Build(im)
	if err != nil {
		return fmt.Errorf("building %s: %w", im.Ref, err)
	}
	return tarball.WriteToFile(path, tag, img)
}

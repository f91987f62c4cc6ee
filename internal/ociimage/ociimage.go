// Package ociimage writes single-layer linux/amd64 images of static
// binaries as image tarballs (importable with `ctr images import` or `kind
// load image-archive`), with go-containerregistry: no Docker, no registry.
package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"sort"

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
	// Files maps a path in the image (relative to /) to its content; every
	// file is executable.
	Files      map[string][]byte
	Entrypoint []string
}

// Build returns the image.
func Build(im Image) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(im.Files))
	for p := range im.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
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
	img, err := mutate.AppendLayers(empty.Image, layer)
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

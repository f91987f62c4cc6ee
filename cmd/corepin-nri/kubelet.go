package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	kubeletconfig "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/cpuset"
	"sigs.k8s.io/yaml"

	"github.com/corepin/corepin/api"
)

// kubeletConfigPath is the kubelet configuration file the plugin reads:
// --kubelet-config, else KUBELET-ROOT/config.yaml (where kubeadm and kind
// write it).
func (o options) kubeletConfigPath() string {
	if o.KubeletConfig != "" {
		return o.KubeletConfig
	}
	return filepath.Join(o.KubeletRoot, "config.yaml")
}

// kubeletReserved is the kubelet's reservedSystemCPUs as its configuration
// file writes it; found is false when there is no file at the default path.
type kubeletReserved struct {
	path  string
	found bool
	value string
	cpus  cpuset.CPUSet
}

// readKubeletReserved reads reservedSystemCPUs from the kubelet's
// configuration file. A missing file is an error only when --kubelet-config
// named it: at the default path it means a kubelet configured otherwise
// (flags, another path), and --reserved-cpus alone decides.
func readKubeletReserved(o options) (kubeletReserved, error) {
	k := kubeletReserved{path: o.kubeletConfigPath()}
	data, err := os.ReadFile(k.path)
	if errors.Is(err, os.ErrNotExist) && o.KubeletConfig == "" {
		return k, nil
	}
	if err != nil {
		return k, fmt.Errorf("kubelet configuration: %w", err)
	}
	k.found = true
	// Not strict: a newer kubelet's fields are not the plugin's business.
	var cfg kubeletconfig.KubeletConfiguration
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return k, fmt.Errorf("kubelet configuration %s: %w", k.path, err)
	}
	want := kubeletconfig.SchemeGroupVersion.String()
	if cfg.APIVersion != want || cfg.Kind != "KubeletConfiguration" {
		return k, fmt.Errorf("kubelet configuration %s: apiVersion %q, kind %q: want apiVersion %s, kind KubeletConfiguration",
			k.path, cfg.APIVersion, cfg.Kind, want)
	}
	k.value = cfg.ReservedSystemCPUs
	if k.cpus, err = api.ParseCPUList(k.value); err != nil {
		return k, fmt.Errorf("kubelet configuration %s: reservedSystemCPUs %q: %w", k.path, k.value, err)
	}
	return k, nil
}

// reservedCPUs decides the CPUs kept for the system. The kubelet's
// reservedSystemCPUs is the default; --reserved-cpus given as another set
// is refused, since the kubelet's allocatable and corepin's pools would then
// disagree about which CPUs pods may use. A kubelet file without
// reservedSystemCPUs leaves --reserved-cpus alone. The string says where
// the set came from, for the start-up log.
func (o options) reservedCPUs() (cpuset.CPUSet, string, error) {
	k, err := readKubeletReserved(o)
	if err != nil {
		return cpuset.New(), "", err
	}
	flagSet, err := api.ParseCPUList(o.ReservedCPUs)
	if err != nil {
		return cpuset.New(), "", fmt.Errorf("--reserved-cpus %q: %w", o.ReservedCPUs, err)
	}
	switch {
	case !k.found:
		return flagSet, fmt.Sprintf("--reserved-cpus (no kubelet configuration at %s)", k.path), nil
	case k.value == "":
		return flagSet, fmt.Sprintf("--reserved-cpus (%s sets no reservedSystemCPUs)", k.path), nil
	case !o.reservedGiven:
		return k.cpus, "reservedSystemCPUs in " + k.path, nil
	case !flagSet.Equals(k.cpus):
		return cpuset.New(), "", fmt.Errorf("--reserved-cpus %q disagrees with the kubelet's reservedSystemCPUs %q in %s: set them alike, or leave --reserved-cpus unset to take the kubelet's",
			o.ReservedCPUs, k.value, k.path)
	}
	return flagSet, "--reserved-cpus, as reservedSystemCPUs in " + k.path, nil
}

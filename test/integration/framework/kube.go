package framework

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Versions of the tools hack/tools-kube.sh builds; the cache directories
// are keyed by them.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.7.0"
)

// ControlPlane is a real etcd and kube-apiserver on loopback.
type ControlPlane struct {
	Dir        string
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	Dynamic    dynamic.Interface
	Etcd       *Process
	APIServer  *Process
}

// StartControlPlane starts etcd and kube-apiserver in a temp dir and waits
// until the API server is ready. Everything stops when the test ends.
func StartControlPlane(t testing.TB) *ControlPlane {
	t.Helper()
	dir := t.TempDir()
	cp := &ControlPlane{Dir: dir}
	etcdPort, peerPort := FreePort(t), FreePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	cp.Etcd = Start(t, dir, "etcd", Binary(t, "etcd-"+EtcdVersion, "etcd"),
		"--name", "corepin-test", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "corepin-test="+peerURL, "--log-level", "warn")

	keyFile := filepath.Join(dir, "sa.key")
	writeRSAKey(t, keyFile)
	token := randomHex(t)
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	cp.APIServer = Start(t, dir, "kube-apiserver", Binary(t, "kube-"+KubeVersion, "kube-apiserver"),
		"--etcd-servers", etcdURL, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(port), "--cert-dir", filepath.Join(dir, "certs"),
		"--service-account-key-file", keyFile, "--service-account-signing-key-file", keyFile,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--token-auth-file", tokenFile, "--authorization-mode", "Node,RBAC",
		"--service-cluster-ip-range", "10.0.0.0/24", "--allow-privileged=true",
		// 1.37 refuses a loopback address for the kubernetes Service's
		// endpoints; nothing here reaches the API server through it.
		"--endpoint-reconciler-type", "none")

	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: server, InsecureSkipTLSVerify: true}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "admin"}
	kc.CurrentContext = "local"
	if err := clientcmd.WriteToFile(*kc, cp.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	var err error
	if cp.Config, err = clientcmd.BuildConfigFromFlags("", cp.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	cp.Config.QPS, cp.Config.Burst = 500, 1000
	cp.Client = kubernetes.NewForConfigOrDie(cp.Config)
	cp.Dynamic = dynamic.NewForConfigOrDie(cp.Config)
	Eventually(t, 90*time.Second, "kube-apiserver /readyz", func() (bool, error) {
		if exited, err := cp.APIServer.Exited(); exited {
			t.Fatalf("kube-apiserver exited: %v\n%s", err, Tail(cp.APIServer.Log, 30))
		}
		body, err := cp.Client.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		return err == nil && string(body) == "ok", err
	})
	// The default service account normally comes from kube-controller-manager.
	Eventually(t, 30*time.Second, "default namespace", func() (bool, error) {
		_, err := cp.Client.CoreV1().ServiceAccounts("default").Create(context.Background(),
			&v1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		return err == nil, err
	})
	return cp
}

func writeRSAKey(t testing.TB, path string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func randomHex(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// SchedulerExtender describes the extender kube-scheduler calls.
type SchedulerExtender struct {
	URL         string
	HTTPTimeout time.Duration
	// TLS, when set, makes kube-scheduler call the extender over HTTPS
	// (URL must then be https://).
	TLS *ExtenderTLS
	// PreemptVerb, when set, is the extender entry's preemptVerb:
	// kube-scheduler then asks the extender which victims to preempt.
	PreemptVerb string
}

// ExtenderTLS is kube-scheduler's side of HTTPS to the extender: the CA
// that signed the extender's serving certificate, and kube-scheduler's own
// client certificate and key (PEM files).
type ExtenderTLS struct {
	CAFile, CertFile, KeyFile string
}

// StartScheduler runs kube-scheduler against the control plane under the
// given process name, serving pods whose schedulerName is schedulerName
// ("" for default-scheduler), with the extender when ext is not nil
// (filter, prioritize and bind verbs, nodeCacheCapable), scoring every node.
func (cp *ControlPlane) StartScheduler(t testing.TB, name, schedulerName string, ext *SchedulerExtender) *Process {
	t.Helper()
	if schedulerName == "" {
		schedulerName = v1.DefaultSchedulerName
	}
	extenders := ""
	if ext != nil {
		tls := "  enableHTTPS: false\n"
		if t := ext.TLS; t != nil {
			tls = fmt.Sprintf("  enableHTTPS: true\n  tlsConfig:\n    caFile: %q\n    certFile: %q\n    keyFile: %q\n", t.CAFile, t.CertFile, t.KeyFile)
		}
		if ext.PreemptVerb != "" {
			tls += fmt.Sprintf("  preemptVerb: %s\n", ext.PreemptVerb)
		}
		extenders = fmt.Sprintf(`extenders:
- urlPrefix: %q
  filterVerb: filter
  prioritizeVerb: prioritize
  bindVerb: bind
  weight: 1
  nodeCacheCapable: true
  httpTimeout: %s
%s`, ext.URL, ext.HTTPTimeout, tls)
	}
	config := fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
percentageOfNodesToScore: 100
profiles:
- schedulerName: %s
%s`, cp.Kubeconfig, schedulerName, extenders)
	path := filepath.Join(cp.Dir, name+".yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return Start(t, cp.Dir, name, Binary(t, "kube-"+KubeVersion, "kube-scheduler"),
		"--config", path, "--secure-port", fmt.Sprint(FreePort(t)), "--bind-address", "127.0.0.1", "-v", "2")
}

// CreateNode creates a Ready node object (no kubelet behind it) with the
// given CPU count as capacity and allocatable, and annotations.
func (cp *ControlPlane) CreateNode(t testing.TB, name string, cpus int, annotations map[string]string) *v1.Node {
	t.Helper()
	ctx := context.Background()
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations,
		Labels: map[string]string{"kubernetes.io/hostname": name}}}
	node, err := cp.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
	resources := v1.ResourceList{
		v1.ResourceCPU:    *resource.NewQuantity(int64(cpus), resource.DecimalSI),
		v1.ResourceMemory: resource.MustParse("256Gi"),
		v1.ResourcePods:   resource.MustParse("1000"),
	}
	node.Status = v1.NodeStatus{Capacity: resources, Allocatable: resources,
		Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, LastHeartbeatTime: metav1.Now(), Reason: "Test"}}}
	if node, err = cp.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("node %s status: %v", name, err)
	}
	// The API server's TaintNodesByCondition admission adds the not-ready
	// taint at creation; with no kubelet nothing would ever lift it.
	node.Spec.Taints = nil
	if node, err = cp.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("node %s taints: %v", name, err)
	}
	return node
}

// CPUTime is the user and system CPU time the process has used so far, from
// /proc (Linux), to attribute a benchmark's CPU to the components of a
// cluster that share one machine.
func (p *Process) CPUTime() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields 14 and 15 (utime,
	// stime, in clock ticks of 1/100 s) count from after its ')'.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", p.cmd.Process.Pid, len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", p.cmd.Process.Pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

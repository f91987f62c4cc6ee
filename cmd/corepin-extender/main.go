// Command corepin-extender is corepin's kube-scheduler extender: it serves
// filter, prioritize and bind over HTTP(S) from a cache of every node's CPU
// topology and every pod's cores.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/corepin/corepin/api"
	extender "github.com/corepin/corepin/scheduler-extender"
)

func main() {
	klog.InitFlags(nil)
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file; in-cluster configuration when empty")
	configFile := flag.String("config", "", "configuration file (YAML); defaults apply when empty")
	listen := flag.String("listen", ":8888", "address to serve the extender on")
	healthListen := flag.String("health-listen", "",
		"also serve /healthz, /readyz and /metrics (never the verbs) on this address, plain HTTP: "+
			"for the kubelet's probes, which dial the pod IP, when --listen is a loopback address")
	profiling := flag.Bool("profiling", false, "serve Go's profiles under /debug/pprof/ on the extender's address")
	inBinding := flag.Bool("alloc-status-in-binding", false,
		"write an exclusive pod's corepin.io/alloc-status in its Binding (one API write, set together with the node) "+
			"instead of a PATCH before the Binding (the contract's default)")
	flag.Parse()
	if err := run(*kubeconfig, *configFile, *listen, *healthListen, *profiling, *inBinding); err != nil {
		klog.ErrorS(err, "corepin-extender failed")
		os.Exit(1)
	}
}

func run(kubeconfig, configFile, listen, healthListen string, profiling, allocStatusInBinding bool) error {
	cfg := api.Config{}
	if configFile != "" {
		var err error
		if cfg, err = api.LoadConfig(configFile); err != nil {
			return err
		}
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	restCfg.QPS, restCfg.Burst = 200, 400
	// Protobuf, like kube-scheduler: the API server then serves every
	// watcher of pods from one encoding, and decoding is cheaper here.
	restCfg.ContentType = runtime.ContentTypeProtobuf
	restCfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	sched, err := extender.NewScheduler(cfg)
	if err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "corepin-extender"})

	c, err := extender.NewCache(client, sched, recorder)
	if err != nil {
		return err
	}
	metrics := extender.NewMetrics(sched)
	events := extender.NewPodEvents(recorder, metrics, extender.PodEventsConfig{})
	c.PodDone = events.Forget
	resizer := extender.NewResizer(sched, client, c, events)
	c.PodUpdated = resizer.Observe
	srv := &extender.Server{Sched: sched, Client: client, Metrics: metrics,
		Ready: c.Synced, Events: events, AllocStatusInBinding: allocStatusInBinding}
	srv.Pods = c

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rc, err := reservationController(restCfg, client, sched, c)
	if err != nil {
		return err
	}
	if rc != nil {
		// Ready only once the reservations are held too: a pod bound
		// before would be given reserved CPUs.
		srv.Ready = func() bool { return c.Synced() && rc.Synced() }
		rc.Recorder, rc.Metrics = recorder, metrics
		go rc.Run(ctx, c.Synced)
	}
	go srv.RunEvents(ctx)
	handler := srv.Handler()
	if profiling {
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		handler = mux
	}
	if allocStatusInBinding {
		klog.InfoS("Exclusive pods get corepin.io/alloc-status in their Binding, not in a PATCH before it")
	}
	httpSrv := &http.Server{Addr: listen, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	if cfg.TLS != nil {
		if httpSrv.TLSConfig, err = tlsConfig(cfg.TLS); err != nil {
			return err
		}
	}
	errc := make(chan error, 2)
	var healthSrv *http.Server
	if healthListen != "" {
		healthSrv = &http.Server{Addr: healthListen, Handler: srv.HealthHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			klog.InfoS("Serving health and metrics", "address", healthListen)
			if err := healthSrv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("--health-listen %s: %w", healthListen, err)
			}
		}()
	}
	go func() {
		klog.InfoS("Serving the extender", "address", listen, "tls", cfg.TLS != nil)
		var err error
		if cfg.TLS != nil {
			err = httpSrv.ListenAndServeTLS(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		} else {
			err = httpSrv.ListenAndServe()
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	if err := c.Start(ctx); err != nil {
		return err
	}
	// After the sync: every node is known, so a pod queued meanwhile is
	// resized against its node's whole state.
	go resizer.Run(ctx)
	nodes, pods := sched.Counts()
	klog.InfoS("Caches synced", "nodes", nodes, "pods", pods)
	ticker := time.NewTicker(30 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case err := <-errc:
			return err
		case now := <-ticker.C:
			srv.ExpireAssumed(now)
		case <-ctx.Done():
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if healthSrv != nil {
				_ = healthSrv.Shutdown(shutdown)
			}
			return httpSrv.Shutdown(shutdown)
		}
	}
}

// tlsConfig serves TLS, requiring client certificates signed by the client
// CA when one is configured (mutual TLS from kube-scheduler).
func tlsConfig(t *api.TLSConfig) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.ClientCAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(t.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("tls.clientCAFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls.clientCAFile %s: no PEM certificates", t.ClientCAFile)
	}
	cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	return cfg, nil
}

// reservationController runs CPUReservations when the API server serves
// the CRD (deploy/ installs it); without it the extender schedules pods
// alone, and a pod naming a reservation is refused with that reason.
// Installing the CRD later takes a restart of the extender.
func reservationController(restCfg *rest.Config, client kubernetes.Interface, sched *extender.Scheduler, c *extender.Cache) (*extender.ReservationController, error) {
	gv := api.CPUReservationGVR.GroupVersion().String()
	var found bool
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.Discovery().ServerResourcesForGroupVersion(gv)
		switch {
		case apierrors.IsNotFound(err):
			return true, nil
		case err != nil:
			klog.V(2).InfoS("Discovering CPUReservations", "err", err.Error())
			return false, nil
		}
		for _, r := range list.APIResources {
			found = found || r.Name == api.ResourceCPUReservation
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("discovering %s: %w", gv, err)
	}
	if !found {
		klog.InfoS("CPUReservation CRD not installed: reservations are off (install it from deploy/ and restart)", "groupVersion", gv)
		return nil, nil
	}
	dynCfg := rest.CopyConfig(restCfg)
	dynCfg.ContentType, dynCfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	dyn, err := dynamic.NewForConfig(dynCfg)
	if err != nil {
		return nil, err
	}
	klog.InfoS("CPUReservations on", "groupVersion", gv)
	return extender.NewReservationController(dyn, sched, c)
}

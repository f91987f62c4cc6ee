// Command corepin-placer places CPUReservations across member clusters
// (contract section 8): it keeps each cluster's view as the extender does,
// runs the extender's filter and prioritize over all their nodes, and
// creates the reservation, with spec.nodeName, in the winning cluster.
//
//	corepin-placer --cluster a=/etc/corepin/a.kubeconfig --cluster b=... --listen :8890
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/placer"
)

// clusterFlags is the repeatable --cluster NAME=KUBECONFIG, in order.
type clusterFlags [][2]string

func (c *clusterFlags) String() string { return fmt.Sprint(*c) }

func (c *clusterFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("%q: want NAME=KUBECONFIG", v)
	}
	for _, have := range *c {
		if have[0] == name {
			return fmt.Errorf("cluster %q given twice", name)
		}
	}
	*c = append(*c, [2]string{name, path})
	return nil
}

func main() {
	klog.InitFlags(nil)
	var clusters clusterFlags
	flag.Var(&clusters, "cluster", "a member cluster as NAME=KUBECONFIG; repeatable, the order breaks score ties")
	listen := flag.String("listen", ":8890", "address to serve the placement API on")
	configFile := flag.String("config", "", "the extender's configuration file (the rules the member clusters' extenders run)")
	certFile := flag.String("tls-cert-file", "", "serve HTTPS with this certificate (PEM); with --tls-key-file")
	keyFile := flag.String("tls-key-file", "", "the certificate's key (PEM)")
	clientCA := flag.String("tls-client-ca-file", "", "require client certificates signed by this CA (PEM)")
	healthListen := flag.String("health-listen", "",
		"also serve /healthz, /readyz and /metrics (never the placement API) on this address, plain HTTP: "+
			"for the kubelet's probes, which present no client certificate, when --tls-client-ca-file is set")
	wait := flag.Duration("wait", 30*time.Second, "how long a cluster's extender may take to answer a reservation before the next cluster is tried")
	flag.Parse()
	if err := run(clusters, *listen, *healthListen, *configFile, *certFile, *keyFile, *clientCA, *wait); err != nil {
		klog.ErrorS(err, "corepin-placer failed")
		os.Exit(1)
	}
}

func run(clusters clusterFlags, listen, healthListen, configFile, certFile, keyFile, clientCA string, wait time.Duration) error {
	if len(clusters) == 0 {
		return errors.New("no --cluster NAME=KUBECONFIG given")
	}
	if (certFile == "") != (keyFile == "") || (clientCA != "" && certFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together, and --tls-client-ca-file needs them")
	}
	cfg := api.Config{}
	if configFile != "" {
		var err error
		if cfg, err = api.LoadConfig(configFile); err != nil {
			return err
		}
	}
	var members []*placer.Cluster
	for _, c := range clusters {
		restCfg, err := clientcmd.BuildConfigFromFlags("", c[1])
		if err != nil {
			return fmt.Errorf("cluster %s: kubeconfig: %w", c[0], err)
		}
		restCfg.QPS, restCfg.Burst = 100, 200
		dynCfg := rest.CopyConfig(restCfg)
		restCfg.ContentType = runtime.ContentTypeProtobuf
		restCfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		client, err := kubernetes.NewForConfig(restCfg)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c[0], err)
		}
		dyn, err := dynamic.NewForConfig(dynCfg)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c[0], err)
		}
		m, err := placer.NewCluster(c[0], cfg, client, dyn)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c[0], err)
		}
		members = append(members, m)
	}
	p := placer.New(members)
	p.Wait = wait
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	for _, m := range members {
		m.Start(ctx)
	}
	srv := &http.Server{Addr: listen, Handler: p.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return fmt.Errorf("--tls-client-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--tls-client-ca-file %s: no PEM certificates", clientCA)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	} else if certFile != "" {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	errc := make(chan error, 2)
	var healthSrv *http.Server
	if healthListen != "" {
		healthSrv = &http.Server{Addr: healthListen, Handler: p.HealthHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			klog.InfoS("Serving health and metrics", "address", healthListen)
			if err := healthSrv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("--health-listen %s: %w", healthListen, err)
			}
		}()
	}
	go func() {
		klog.InfoS("Serving the placement API", "address", listen, "tls", certFile != "", "clusters", len(members))
		var err error
		if certFile != "" {
			err = srv.ListenAndServeTLS(certFile, keyFile)
		} else {
			err = srv.ListenAndServe()
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if healthSrv != nil {
			_ = healthSrv.Shutdown(shutdown)
		}
		return srv.Shutdown(shutdown)
	}
}

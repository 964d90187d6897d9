// Command vcsim-genievm runs govmomi's vSphere API simulator (vcsim) for GenieVM's tests.
//
// It is built by build.sh from Debian's golang-github-vmware-govmomi-dev, patched
// (patches/) and extended with a test double of QueryChangedDiskAreas
// (double/changed_disk_areas_double.go, compiled into the simulator package).
//
//	vcsim-genievm -listen 127.0.0.1:0 -username user -password pass -ca-file /tmp/ca.pem [-esx]
//
// prints "VCSIM_URL=https://127.0.0.1:PORT/sdk" once it serves, and runs until SIGTERM,
// when it removes its datastore folders.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	username := flag.String("username", "user", "login user")
	password := flag.String("password", "pass", "login password")
	caFile := flag.String("ca-file", "", "write the server's self-signed certificate (PEM) here")
	vms := flag.Int("vm", 2, "VMs per resource pool")
	esx := flag.Bool("esx", false, "simulate a standalone ESXi host (datacenter ha-datacenter) instead of vCenter")
	flag.Parse()

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	}
	model.Machine = *vms
	model.Autostart = false // VMs start powered off: tests power them on when they need to
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: %s", err)
	}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	cert, certPEM := selfSigned()
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	// the test double's control endpoint: every changeId given so far becomes unknown (a CBT reset)
	model.Service.HandleFunc("/genievm-double/forget-change-ids", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		simulator.ForgetChangeIdsDouble()
		w.WriteHeader(http.StatusNoContent)
	})
	server := model.Service.NewServer()
	if *caFile != "" {
		if err := ioutil.WriteFile(*caFile, certPEM, 0o644); err != nil {
			log.Fatalf("vcsim: certificate: %s", err)
		}
	}
	u := *server.URL
	u.User = nil
	fmt.Printf("VCSIM_URL=%s\n", u.String())
	_ = os.Stdout.Sync()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	server.Close()
	model.Remove()
}

// selfSigned makes a new ECDSA P-256 certificate for 127.0.0.1 and localhost (Go's built-in test
// certificate has an RSA-1024 key, which OpenSSL's default security level refuses).
func selfSigned() (tls.Certificate, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatalf("vcsim: key: %s", err)
	}
	template := x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vcsim for GenieVM tests"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		log.Fatalf("vcsim: certificate: %s", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

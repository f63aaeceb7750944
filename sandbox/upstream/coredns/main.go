// Command coredns is CoreDNS with the plugins kubeadm's Corefile uses, for tether-sandbox's
// upstream control plane. It is CoreDNS's own main (coremain.Run) with a shorter plugin list:
// the full list links every cloud provider's SDK, which triples the build for plugins the
// sandbox never configures.
package main

import (
	"github.com/coredns/coredns/coremain"

	// kubeadm's Corefile: errors, health, ready, kubernetes, prometheus, forward, cache, loop,
	// reload, loadbalance; log and hosts for debugging and the odd static name.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}

// Command tether-upstream runs the real Kubernetes control plane (and kube-proxy) for tether-sandbox's
// `--control-plane upstream`: one binary, several components, chosen by the first argument
// (as hyperkube did), so that one build and one go.mod pin all of them to the same release.
//
//	tether-upstream etcd --data-dir DIR --listen-client-url URL
//	tether-upstream kube-apiserver [kube-apiserver flags]
//	tether-upstream kube-controller-manager [flags]
//	tether-upstream kube-scheduler [flags]
//	tether-upstream kube-proxy [flags]
//	tether-upstream version
//
// Each component runs in its own process: the components keep process-wide state (flags,
// metrics registries, klog), so running them side by side in one process is not something
// upstream supports.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // the JSON log format, as upstream's mains register it
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream's mains register them
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric
	"k8s.io/component-base/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"

	_ "time/tzdata" // CronJob time zones, as the apiserver and controller-manager mains import it
)

// components maps a component's name to its upstream command.
var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": func() *cobra.Command { return controllermanager.NewControllerManagerCommand() },
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kube-proxy":              proxy.NewProxyCommand,
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s etcd|kube-apiserver|kube-controller-manager|kube-scheduler|version [flags]\n",
		filepath.Base(os.Args[0]))
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	// The component sees itself as argv[0], so cobra parses the rest as its flags and its
	// messages name the component.
	os.Args = append([]string{name}, os.Args[2:]...)
	switch name {
	case "etcd":
		os.Exit(runEtcd(os.Args[1:]))
	case "version":
		fmt.Println(version.Get().GitVersion)
		return
	}
	newCommand, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown component %q\n", name)
		usage()
		os.Exit(2)
	}
	os.Exit(cli.Run(newCommand()))
}

// pause: the sandbox ("infra") container of every pod on the local real node. It holds the pod's
// namespaces, reaps zombies when the pod shares its PID namespace and exits on SIGINT/SIGTERM, like
// Kubernetes' own pause (a C program; this one is built with the Go toolchain the repo already needs,
// because no registry is reachable to pull registry.k8s.io/pause).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 16)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			for {
				var ws syscall.WaitStatus
				if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}

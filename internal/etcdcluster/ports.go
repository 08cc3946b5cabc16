package etcdcluster

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Members keep their ports across restarts, so ports are picked once and
// then left unbound while a member is stopped. Two measures keep them free:
// ports are drawn below the kernel's ephemeral range, which outgoing
// connections never use, and a process-wide registry stops two clusters in
// this process from drawing the same port.

const minPort = 10000

var registry = struct {
	sync.Mutex
	used map[int]bool
}{used: map[int]bool{}}

// reservePorts returns n distinct free ports on 127.0.0.1, registered until
// releasePorts.
func reservePorts(n int) ([]int, error) {
	registry.Lock()
	defer registry.Unlock()
	lo := ephemeralLow()
	var held []net.Listener
	defer func() {
		// Held open while picking, so that no port is drawn twice.
		for _, ln := range held {
			_ = ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for attempt := 0; len(ports) < n; attempt++ {
		if attempt > 200 {
			return nil, errors.New("etcdcluster: no free port found")
		}
		var addr string
		if lo-minPort > 1000 && attempt < 100 {
			addr = "127.0.0.1:" + strconv.Itoa(minPort+rand.IntN(lo-minPort))
		} else {
			addr = "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		port := ln.Addr().(*net.TCPAddr).Port
		held = append(held, ln)
		if registry.used[port] {
			continue
		}
		ports = append(ports, port)
	}
	for _, p := range ports {
		registry.used[p] = true
	}
	return ports, nil
}

func releasePorts(ports ...int) {
	registry.Lock()
	defer registry.Unlock()
	for _, p := range ports {
		delete(registry.used, p)
	}
}

// ephemeralLow returns the low end of the kernel's ephemeral port range,
// or 0 (no preference) where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return lo
}

func isAddrInUse(err error) bool {
	// embed does not always wrap the listener's error.
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

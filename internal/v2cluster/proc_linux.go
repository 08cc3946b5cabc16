//go:build linux

package v2cluster

import "syscall"

// sysProcAttr puts the member in a process group of its own, so that Kill
// reaches it alone, and has the kernel kill it when the test process dies,
// so that a panicking or killed test leaves no member behind. (Pdeathsig
// fires when the forking OS thread exits; Go threads exit only when a
// goroutine locked to one ends, which test code that starts clusters does
// not do. End of stdin is a second net: the member then closes itself.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

//go:build unix && !linux

package v2cluster

import "syscall"

// sysProcAttr puts the member in a process group of its own. Without
// Pdeathsig outside Linux, a member outlives a killed test only until it
// reads end of stdin, when it closes itself.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// Package vintage builds the vintage driver (command vintage) twice: as
// stock clientv3 v3.1.5, and with the etcd3 patch of examples/apiserver-v1.7
// applied to that clientv3. The patch is applied with patch(1) to a scratch
// copy of the module, so the build proves the very patch file an operator
// applies to a Kubernetes 1.7 tree.
package vintage

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// patchFile is the etcd3 patch, relative to the repository root.
const patchFile = "examples/apiserver-v1.7/etcd3-clientv3.patch"

// etcdVendor is where a Kubernetes tree vendors github.com/coreos/etcd.
const etcdVendor = "vendor/github.com/coreos/etcd"

// Binaries are the two builds of the driver.
type Binaries struct {
	Stock, Patched string
}

// moduleDir returns the directory of the legacy module.
func moduleDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("vintage: cannot locate the legacy module")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build builds both drivers into dir.
func Build(dir string) (Binaries, error) {
	mod, err := moduleDir()
	if err != nil {
		return Binaries{}, err
	}
	modfile, err := patchedModule(mod, filepath.Join(dir, "patched"))
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{Stock: filepath.Join(dir, "vintage-stock"), Patched: filepath.Join(dir, "vintage-patched")}
	if err := gocmd(mod, "build", "-o", b.Stock, "./cmd/vintage"); err != nil {
		return Binaries{}, err
	}
	if err := gocmd(mod, "build", "-modfile", modfile, "-o", b.Patched, "./cmd/vintage"); err != nil {
		return Binaries{}, err
	}
	return b, nil
}

// patchedModule copies the clientv3 module (github.com/coreos/etcd v3.1.5) from
// the module cache into scratch, laid out as in a Kubernetes tree's
// vendor/, applies the etcd3 patch there with patch -p1, and writes a go.mod
// (and go.sum) beside it that replace the module with the patched copy. It
// returns that go.mod, for go build -modfile. (go build -overlay refuses
// files in the module cache.)
func patchedModule(mod, scratch string) (string, error) {
	out, err := gocmdOutput(mod, "list", "-m", "-f", "{{.Dir}}", "github.com/coreos/etcd")
	if err != nil {
		return "", err
	}
	etcdDir := strings.TrimSpace(out)
	patch, err := filepath.Abs(filepath.Join(mod, "..", patchFile))
	if err != nil {
		return "", err
	}
	if err := os.RemoveAll(scratch); err != nil {
		return "", err
	}
	copyDir := filepath.Join(scratch, filepath.FromSlash(etcdVendor))
	if err := copyTree(etcdDir, copyDir); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(copyDir, "go.mod"), []byte("module github.com/coreos/etcd\n"), 0o644); err != nil {
		return "", err
	}
	cmd := exec.Command("patch", "-p1", "--batch", "--forward", "-i", patch)
	cmd.Dir = scratch
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("vintage: patch -p1 < %s: %v\n%s", patch, err, b)
	}
	gomod, err := os.ReadFile(filepath.Join(mod, "go.mod"))
	if err != nil {
		return "", err
	}
	gomod = append(gomod, "\nreplace github.com/coreos/etcd => "+copyDir+"\n"...)
	modfile := filepath.Join(scratch, "go.mod")
	if err := os.WriteFile(modfile, gomod, 0o644); err != nil {
		return "", err
	}
	sum, err := os.ReadFile(filepath.Join(mod, "go.sum"))
	if err != nil {
		return "", err
	}
	return modfile, os.WriteFile(filepath.Join(scratch, "go.sum"), sum, 0o644)
}

// copyTree copies the regular files below src to dst, writable (the module
// cache is read-only).
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

func gocmd(dir string, args ...string) error {
	_, err := gocmdOutput(dir, args...)
	return err
}

func gocmdOutput(dir string, args ...string) (string, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("vintage: go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

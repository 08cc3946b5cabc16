package v2cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// BinaryEnv names an environment variable that, when set, points at a
// prebuilt etcd35member binary; Binary then uses it as is and builds nothing.
const BinaryEnv = "ETCD35MEMBER_BIN"

// memberPkg is the package of the member command inside the nested module.
const memberPkg = "./cmd/etcd35member"

var (
	binMu   sync.Mutex
	binPath string // built or found once per process
)

// Binary returns the path of the etcd35member binary, building it first when
// the cache holds none for the current sources.
//
// The binary is cached under os.UserCacheDir()/etcdbalance, named by a hash
// of the nested module's go.mod, go.sum and Go sources and of the Go
// version, so an edit to the member rebuilds it and nothing else does. The
// first build fetches the etcd 3.5 modules and compiles them, about a minute
// on a cold machine: call Binary from TestMain, or give Start a context that
// allows for it. Builds are serialised by a file lock, and the result is
// renamed into place, so concurrent test binaries neither corrupt the cache
// nor both compile.
func Binary(ctx context.Context) (string, error) {
	binMu.Lock()
	defer binMu.Unlock()
	if binPath != "" {
		return binPath, nil
	}
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("v2cluster: %s: %w", BinaryEnv, err)
		}
		binPath = p
		return p, nil
	}
	modDir, err := moduleDir()
	if err != nil {
		return "", err
	}
	sum, err := sourceHash(modDir)
	if err != nil {
		return "", err
	}
	cacheDir, err := cacheDir()
	if err != nil {
		return "", err
	}
	target := filepath.Join(cacheDir, "etcd35member-"+sum)
	if isExecutable(target) {
		binPath = target
		return target, nil
	}
	unlock, err := lockPath(ctx, target+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have built it while we waited for the lock.
	if isExecutable(target) {
		binPath = target
		return target, nil
	}
	if err := build(ctx, modDir, target); err != nil {
		return "", err
	}
	pruneCache(cacheDir, target)
	binPath = target
	return target, nil
}

// pruneCache removes member binaries of other source versions that have
// not been rebuilt for a day: each is about 35 MB, and every edit of the
// member makes a new one. A day's grace keeps those that a test running on
// another checkout may be about to start.
func pruneCache(dir, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, "etcd35member-*"))
	for _, f := range old {
		if f == keep || f == keep+".lock" {
			continue
		}
		if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) > 24*time.Hour {
			_ = os.Remove(f)
		}
	}
}

// build compiles the member into a temporary file beside target and renames
// it into place, so that target is either absent or complete.
func build(ctx context.Context, modDir, target string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("v2cluster: the go command is needed to build etcd35member: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", target, os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, goBin, "build", "-C", modDir, "-o", tmp, memberPkg)
	// The nested module is built on its own: a go.work in a parent folder
	// must not pull it into the root module's build list, -mod=mod lets a
	// clean machine fetch what go.sum names, and VCS stamping is skipped
	// because it fails in trees without git or owned by another user.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod -buildvcs=false")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("v2cluster: building etcd35member in %s (%v): %w\n%s", modDir, time.Since(start).Round(time.Millisecond), err, out)
	}
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("v2cluster: %w", err)
	}
	return nil
}

// moduleDir finds internal/etcd35, first beside this source file (the usual
// case under go test), then by walking up from the working directory.
func moduleDir() (string, error) {
	var tried []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		d := filepath.Join(filepath.Dir(file), "..", "etcd35")
		if isModule(d) {
			return filepath.Clean(d), nil
		}
		tried = append(tried, d)
	}
	wd, err := os.Getwd()
	if err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			m := filepath.Join(d, "internal", "etcd35")
			if isModule(m) {
				return m, nil
			}
			tried = append(tried, m)
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", fmt.Errorf("v2cluster: cannot find the etcd35 module (tried %s); set %s to a prebuilt binary", strings.Join(tried, ", "), BinaryEnv)
}

func isModule(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "go.mod"))
	return err == nil
}

// sourceHash hashes everything that decides what the build produces.
func sourceHash(modDir string) (string, error) {
	var files []string
	err := filepath.WalkDir(modDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != modDir && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if n := d.Name(); n == "go.mod" || n == "go.sum" || strings.HasSuffix(n, ".go") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("v2cluster: hashing %s: %w", modDir, err)
	}
	sort.Strings(files)
	h := sha256.New()
	fmt.Fprintf(h, "%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("v2cluster: %w", err)
		}
		rel, _ := filepath.Rel(modDir, f)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

func cacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		// No HOME (some CI sandboxes): a per-user folder in the temp dir
		// still caches across test binaries.
		base = filepath.Join(os.TempDir(), fmt.Sprintf("cache-%d", os.Getuid()))
	}
	d := filepath.Join(base, "etcdbalance")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("v2cluster: %w", err)
	}
	return d, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// lockPath takes an exclusive lock on path, polling so that ctx can end the
// wait, and returns the function that releases it.
func lockPath(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("v2cluster: %w", err)
	}
	for {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("v2cluster: locking %s: %w", path, err)
		}
		if ok {
			return func() {
				unlock(f)
				f.Close()
			}, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("v2cluster: waiting for another build of etcd35member: %w", context.Cause(ctx))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// errNotRunning is returned by member operations that need a live process.
var errNotRunning = errors.New("member is not running")

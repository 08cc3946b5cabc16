package oldgo

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// checked lists the package directories, relative to the module root,
// that must stay buildable by Go 1.8 and use only its standard library.
// Packages in the list may import each other. v2compat joins the list
// (`var checked = []string{"picker", "v2compat"}`) once its directory
// exists.
var checked = []string{"picker", "v2compat"}

// go18Minor is the Go 1.x release the checked packages must support.
const go18Minor = 8

// toolchain holds the GOROOT of the go command and the Go 1.8 API read
// from its api directory.
type toolchain struct {
	goroot string
	api    *API
}

// loadToolchain loads the toolchain once for all tests.
var loadToolchain = sync.OnceValues(func() (toolchain, error) {
	goroot, err := GoRoot()
	if err != nil {
		return toolchain{}, err
	}
	api, err := LoadAPI(filepath.Join(goroot, "api"), go18Minor)
	return toolchain{goroot, api}, err
})

// go18 returns the GOROOT and the Go 1.8 API or fails the test.
func go18(t *testing.T) (string, *API) {
	t.Helper()
	tc, err := loadToolchain()
	if err != nil {
		t.Fatal(err)
	}
	return tc.goroot, tc.api
}

// moduleRoot returns the root directory of this module.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(gomod), "module "+ModulePath+"\n") {
		t.Fatalf("%s/go.mod does not declare module %s", root, ModulePath)
	}
	return root
}

// TestCheckedPackagesBuildWithGo18 compiles the checked packages in a
// module whose go.mod says "go 1.8", so the compiler rejects newer
// language features. The packages are copied to their own relative
// directories so that they can import each other.
func TestCheckedPackagesBuildWithGo18(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	files := make(map[string][]byte)
	for _, rel := range checked {
		src, err := SourceFiles(root, rel)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range src {
			files[name] = data
		}
	}
	if err := BuildModule(t.TempDir(), "1.8", files); err != nil {
		t.Fatal(err)
	}
}

// TestCheckedPackagesUseGo18API reports every import, standard-library
// symbol and builtin of the checked packages that Go 1.8 did not have.
func TestCheckedPackagesUseGo18API(t *testing.T) {
	t.Parallel()
	goroot, api := go18(t)
	c := NewChecker(moduleRoot(t), goroot, api, checked)
	checkEach(t, c, checked)
}

// legacy lists the package directories of the nested legacy module that
// must be plain Go 1.8 too. They may import, besides the standard library
// and the checked packages, what a Kubernetes 1.7 tree vendors for them.
var legacy = []string{"legacy/v3balancer"}

// legacyImports are the vendored packages legacy may import: grpc v1.0.4
// and the x/net/context that its API uses (a type of its own under Go 1.8).
var legacyImports = []string{"google.golang.org/grpc", "google.golang.org/grpc/codes", "golang.org/x/net/context"}

// legacyRequire pins those packages to the versions the legacy module uses.
var legacyRequire = []string{
	"google.golang.org/grpc v1.0.4",
	"golang.org/x/net v0.0.0-20180724234803-3673e40ba225",
	"github.com/golang/protobuf v1.1.0",
}

// TestLegacyBuildsWithGo18 compiles the legacy packages and the checked
// packages they import in a "go 1.8" module requiring grpc v1.0.4.
func TestLegacyBuildsWithGo18(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	files := make(map[string][]byte)
	for _, rel := range append(append([]string(nil), checked...), legacy...) {
		src, err := SourceFiles(root, rel)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range src {
			files[name] = data
		}
	}
	gosum, err := os.ReadFile(filepath.Join(root, "legacy", "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := BuildModuleRequiring(t.TempDir(), "1.8", files, legacyRequire, gosum); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyUsesGo18API reports what the legacy packages use of the
// standard library that Go 1.8 did not have, and any import beyond the
// standard library, the checked packages and legacyImports.
func TestLegacyUsesGo18API(t *testing.T) {
	t.Parallel()
	goroot, api := go18(t)
	root := moduleRoot(t)
	c := NewChecker(root, goroot, api, append(append([]string(nil), checked...), legacy...))
	c.Allow(filepath.Join(root, "legacy"), legacyImports...)
	checkEach(t, c, legacy)
}

// TestGoLineIsEnforced makes sure that the build check cannot pass
// silently: the toolchain must reject newer language features because of
// the go line alone.
func TestGoLineIsEnforced(t *testing.T) {
	t.Parallel()
	files := map[string][]byte{"canary/canary.go": []byte(`package canary

// First returns its argument; it needs type parameters (go1.18).
func First[T any](v T) T { return v }

// Count loops over an integer (go1.22) and calls min (go1.21).
func Count() int {
	n := 0
	for range 10 {
		n++
	}
	return min(n, 3)
}
`)}
	err := BuildModule(t.TempDir(), "1.8", files)
	if err == nil {
		t.Fatal(`generic code built although go.mod says "go 1.8"; the build check would be meaningless`)
	}
	for _, want := range []string{"requires go1.18", "requires go1.21", "requires go1.22"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("go build output does not mention %q:\n%v", want, err)
		}
	}
	if err := BuildModule(t.TempDir(), "1.22", files); err != nil {
		t.Fatalf("the canary must build with a newer go line: %v", err)
	}
}

func TestParseAPILine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line string
		want symbol
	}{
		{"pkg sync/atomic, func AddInt64(*int64, int64) int64", symbol{"sync/atomic", "func", "", "AddInt64"}},
		{"pkg time, method (Time) Round(Duration) Time", symbol{"time", "method", "Time", "Round"}},
		{"pkg sync, method (*Mutex) Lock()", symbol{"sync", "method", "Mutex", "Lock"}},
		{"pkg net/http, type Request struct, Cancel <-chan struct", symbol{"net/http", "field", "Request", "Cancel"}},
		{"pkg bufio, type ReadWriter struct, embedded *Reader", symbol{"bufio", "field", "ReadWriter", "Reader"}},
		{"pkg crypto/tls, type Config struct, embedded sync.Mutex", symbol{"crypto/tls", "field", "Config", "Mutex"}},
		{"pkg io, type Reader interface, Read([]uint8) (int, error)", symbol{"io", "method", "Reader", "Read"}},
		{"pkg io, type Reader interface { Read }", symbol{"io", "type", "", "Reader"}},
		{"pkg net/http, type Header map[string][]string", symbol{"net/http", "type", "", "Header"}},
		{"pkg math, const MaxInt64 = 9223372036854775807", symbol{"math", "const", "", "MaxInt64"}},
		{"pkg math, const MaxInt64 ideal-int", symbol{"math", "const", "", "MaxInt64"}},
		{"pkg os, var Args []string", symbol{"os", "var", "", "Args"}},
		{"pkg syscall (linux-386), const AF_INET = 2", symbol{"syscall", "const", "", "AF_INET"}},
		{"pkg sync/atomic, method (*Pointer[$0]) Load() *$0", symbol{"sync/atomic", "method", "Pointer", "Load"}},
		{"pkg slices, func Max[$0 interface{ ~[]$1 }, $1 cmp.Ordered]($0) $1", symbol{"slices", "func", "", "Max"}},
	}
	for _, tt := range tests {
		got, ok := parseAPILine(tt.line)
		if !ok || got != tt.want {
			t.Errorf("parseAPILine(%q) = %+v, %v; want %+v", tt.line, got, ok, tt.want)
		}
	}
	for _, bad := range []string{"", "package x", "pkg x, frob Y"} {
		if got, ok := parseAPILine(bad); ok {
			t.Errorf("parseAPILine(%q) = %+v, want failure", bad, got)
		}
	}
}

// TestAPIIsGo18 spot-checks the loaded API against what Go 1.8 had.
func TestAPIIsGo18(t *testing.T) {
	t.Parallel()
	_, api := go18(t)
	for _, s := range []symbol{
		{"sync/atomic", "func", "", "AddInt64"},
		{"sync/atomic", "type", "", "Value"},       // go1.4
		{"time", "method", "Time", "Round"},        // go1.1
		{"net/http", "field", "Request", "Cancel"}, // go1.5
		{"math", "const", "", "MaxInt64"},
		{"io", "method", "ReadCloser", "Read"},          // embedded interface
		{"bufio", "method", "ReadWriter", "ReadString"}, // promoted
		{"sort", "func", "", "Slice"},                   // go1.8
	} {
		if !api.has(s) {
			t.Errorf("%s missing from the %s API", s, api.Version)
		}
	}
	for _, s := range []symbol{
		{"sync/atomic", "type", "", "Int64"},           // go1.19
		{"strings", "func", "", "Cut"},                 // go1.18
		{"time", "method", "Time", "UnixMilli"},        // go1.17
		{"net/http", "method", "Request", "Clone"},     // go1.13
		{"sort", "func", "", "Find"},                   // go1.19
		{"net/http", "field", "Server", "BaseContext"}, // go1.13
	} {
		if api.has(s) {
			t.Errorf("%s wrongly in the %s API", s, api.Version)
		}
	}
	if !api.HasPackage("context") || api.HasPackage("math/bits") || api.HasPackage("math/rand/v2") {
		t.Error("wrong package set: want context (go1.7) but not math/bits (go1.9) or math/rand/v2")
	}
}

// writeTree creates files below a new temporary directory and returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, src := range files {
		path := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// expect returns "file:line: msg" for the line of src containing marker.
func expect(t *testing.T, file, src, marker, msg string) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		if strings.Contains(sc.Text(), marker) {
			return fmt.Sprintf("%s:%d: %s", file, n, msg)
		}
	}
	t.Fatalf("marker %q not in %s", marker, file)
	return ""
}

// checkTree runs a Checker over rel and compares its findings with want.
func checkTree(t *testing.T, root string, checked []string, rel string, want []string) {
	t.Helper()
	goroot, api := go18(t)
	vs, err := NewChecker(root, goroot, api, checked).Check(rel)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(vs))
	for i, v := range vs {
		got[i] = v.String()
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("violations:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

const newerSrc = `package bad

import (
	"bytes"
	"math"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

var counter atomic.Int64

func Cut(s string) (string, string, bool) { return strings.Cut(s, ",") }

func Pick(n int) int { return rand.IntN(n) }

func Millis(t time.Time) int64 { return t.UnixMilli() }

func Clone(r *http.Request) *http.Request { return r.Clone(r.Context()) }

func Smaller(a, b int) int { return min(a, b) }

func Identity[T any](v T) T { return v }

func Transport() *http.Transport { return &http.Transport{ForceAttemptHTTP2: true, MaxIdleConns: 1} }

type buffer struct{ *bytes.Buffer }

func Spare(b buffer) []byte { return b.AvailableBuffer() }

func Iterable(t reflect.Type) bool { return t.CanSeq() }

type kind interface{ reflect.Type }

func Iterable2(k kind) bool { return k.CanSeq2() }

type request struct{ *http.Request }

func Route(q request) string { return q.Pattern }

const biggest = math.MaxInt

func Next(p unsafe.Pointer) unsafe.Pointer { return unsafe.Add(p, 1) }
`

// TestCheckerRejectsNewerAPI feeds the checker a package full of things
// Go 1.8 lacks; each must be reported at its line, and nothing else.
func TestCheckerRejectsNewerAPI(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{
		"bad/bad.go":    newerSrc,
		"bad/ignore.go": "//go:build ignore\n\npackage bad\n",
	})
	f := "bad/bad.go"
	checkTree(t, root, []string{"bad"}, "bad", []string{
		expect(t, f, newerSrc, `"math/rand/v2"`, `import "math/rand/v2" (package not in go1.8 API)`),
		expect(t, f, newerSrc, "atomic.Int64", "sync/atomic.Int64 (not in go1.8 API)"),
		expect(t, f, newerSrc, "strings.Cut", "strings.Cut (not in go1.8 API)"),
		expect(t, f, newerSrc, "rand.IntN", "math/rand/v2.IntN (not in go1.8 API)"),
		expect(t, f, newerSrc, "t.UnixMilli", "time.Time.UnixMilli (not in go1.8 API)"),
		expect(t, f, newerSrc, "r.Clone", "net/http.Request.Clone (not in go1.8 API)"),
		expect(t, f, newerSrc, "min(a, b)", "predeclared min (added in go1.21)"),
		expect(t, f, newerSrc, "Identity[T any]", "type parameters (generics need go1.18)"),
		expect(t, f, newerSrc, "Identity[T any]", "predeclared any (added in go1.18)"),
		expect(t, f, newerSrc, "ForceAttemptHTTP2", "net/http.Transport.ForceAttemptHTTP2 (not in go1.8 API)"),
		expect(t, f, newerSrc, "b.AvailableBuffer", "bytes.Buffer.AvailableBuffer (not in go1.8 API)"),
		expect(t, f, newerSrc, "t.CanSeq", "reflect.Type.CanSeq (not in go1.8 API)"),
		expect(t, f, newerSrc, "k.CanSeq2", "reflect.Type.CanSeq2 (not in go1.8 API)"),
		expect(t, f, newerSrc, "q.Pattern", "net/http.Request.Pattern (not in go1.8 API)"),
		expect(t, f, newerSrc, "math.MaxInt", "math.MaxInt (not in go1.8 API)"),
		expect(t, f, newerSrc, "unsafe.Add", "unsafe.Add (not in go1.8)"),
		"bad/ignore.go:1: //go:build without a // +build line (Go 1.8 ignores //go:build)",
	})
}

const oldSrc = `// +build !go1.9

package good

import (
	"bufio"
	"context"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

var hits int64

func Hit() int64 { return atomic.AddInt64(&hits, 1) }

func Since(t time.Time) time.Duration { return time.Now().Sub(t) }

func Decay(x float64) float64 { return math.Exp(-x) / math.MaxInt64 }

func Cancel(r *http.Request) <-chan struct{} { return r.Cancel }

func NewRequest(ch chan struct{}) *http.Request { return &http.Request{Cancel: ch, Method: "GET"} }

func Size(name string) int64 {
	fi, err := os.Stat(name)
	if err != nil {
		return 0
	}
	return fi.Size() + int64(fi.Mode()&os.ModePerm)
}

func Op(err *os.PathError) string { return err.Op }

func Line(rw *bufio.ReadWriter) (string, error) { return rw.ReadString('\n') }

func Read(rc io.ReadCloser, p []byte) (int, error) { return rc.Read(p) }

type reader interface{ io.Reader }

func ReadVia(r reader, p []byte) (int, error) { return r.Read(p) }

type lockedCounter struct {
	sync.Mutex
	n int
}

func (c *lockedCounter) inc() { c.Lock(); c.n++; c.Unlock() }

func Done(ctx context.Context) <-chan struct{} { return ctx.Done() }

func Sorted(xs []int) { sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] }) }

const wordSize = unsafe.Sizeof(uintptr(0))

var readAll = io.Reader.Read

func Error(err error) string { return err.Error() }

func Wait(d time.Duration) { <-time.After(d); _ = d.Seconds() }
`

// TestCheckerAcceptsGo18API feeds the checker a package using only Go
// 1.8 features, including aliases that later releases introduced for
// old names (os.FileInfo, os.PathError), promoted methods and fields of
// embedded types, and interface methods.
func TestCheckerAcceptsGo18API(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{"good/good.go": oldSrc})
	checkTree(t, root, []string{"good"}, "good", nil)
}

// TestCheckerImports checks that checked packages may import each other
// but nothing else outside the standard library, and that a package is
// not blamed for what the checked packages it imports use.
func TestCheckerImports(t *testing.T) {
	t.Parallel()
	aSrc := `package a

import (
	"` + ModulePath + `/b"
	_ "` + ModulePath + `/c"
	_ "example.com/other"
)

// F calls into b.
func F() string { return b.F() }
`
	root := writeTree(t, map[string]string{
		"a/a.go": aSrc,
		"b/b.go": "package b\n\nimport \"strings\"\n\n// F uses something new.\nfunc F() string { return strings.Clone(\"x\") }\n",
		"c/c.go": "package c\n",
	})
	checkTree(t, root, []string{"a", "b"}, "a", []string{
		expect(t, "a/a.go", aSrc, "/c\"", `import "`+ModulePath+`/c" (only the standard library and checked packages may be imported)`),
		expect(t, "a/a.go", aSrc, "example.com", `import "example.com/other" (only the standard library and checked packages may be imported)`),
	})
	checkTree(t, root, []string{"a", "b"}, "b", []string{"b/b.go:6: strings.Clone (not in go1.8 API)"})
}

// TestCheckerAllow checks that allowed packages may be imported and their
// symbols used, while the standard library is still measured and other
// imports are still refused.
func TestCheckerAllow(t *testing.T) {
	t.Parallel()
	src := `package a

import (
	"strings"

	"golang.org/x/net/context"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/metadata"
)

// Get has the old grpc.Balancer's Get signature.
func Get(ctx context.Context, opts grpc.BalancerGetOptions) (grpc.Address, func(), error) {
	_, _, _ = strings.Cut("a,b", ",")
	return grpc.Address{}, nil, ctx.Err()
}
`
	root := writeTree(t, map[string]string{"a/a.go": src})
	goroot, api := go18(t)
	c := NewChecker(root, goroot, api, []string{"a"})
	c.Allow(filepath.Join(moduleRoot(t), "legacy"), legacyImports...)
	vs, err := c.Check("a")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(vs))
	for i, v := range vs {
		got[i] = v.String()
	}
	want := []string{
		expect(t, "a/a.go", src, "grpc/metadata", `import "google.golang.org/grpc/metadata" (only the standard library and checked packages may be imported)`),
		expect(t, "a/a.go", src, "strings.Cut", "strings.Cut (not in go1.8 API)"),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("violations:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// checkEach reports, in a subtest per package, every use of what Go 1.8
// did not have.
func checkEach(t *testing.T, c *Checker, rels []string) {
	for _, rel := range rels {
		t.Run(rel, func(t *testing.T) {
			vs, err := c.Check(rel)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				t.Error(v)
			}
		})
	}
}

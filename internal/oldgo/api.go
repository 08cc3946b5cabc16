package oldgo

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// symbol identifies one exported standard-library declaration the way
// the API files under $GOROOT/api list it. Signatures and types are
// deliberately left out: a symbol matches by package, kind, receiver and
// name only.
type symbol struct {
	pkg  string // import path, e.g. "net/http"
	kind string // "func", "var", "const", "type", "method" or "field"
	recv string // for methods and fields: the type name without '*', else ""
	name string
}

// String formats s the way violations name it, e.g. "time.Time.Round".
func (s symbol) String() string {
	if s.recv != "" {
		return s.pkg + "." + s.recv + "." + s.name
	}
	return s.pkg + "." + s.name
}

// API is the set of standard-library packages and symbols that existed
// in a given Go release, as read from the files in $GOROOT/api.
type API struct {
	// Version is the release the set describes, e.g. "go1.8".
	Version string

	pkgs map[string]bool
	syms map[symbol]bool
}

// LoadAPI reads go1.txt and go1.1.txt through go1.<minor>.txt from dir,
// normally $GOROOT/api; their union is the API of Go 1.<minor>.
// Interface methods and methods promoted through embedding are listed
// in those files under the outer type, so the result knows them too.
func LoadAPI(dir string, minor int) (*API, error) {
	a := &API{
		Version: fmt.Sprintf("go1.%d", minor),
		pkgs:    make(map[string]bool),
		syms:    make(map[symbol]bool),
	}
	for i := 0; i <= minor; i++ {
		name := "go1.txt"
		if i > 0 {
			name = fmt.Sprintf("go1.%d.txt", i)
		}
		if err := a.readFile(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *API) readFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sym, ok := parseAPILine(line)
		if !ok {
			return fmt.Errorf("%s:%d: unrecognized API line %q", name, n, line)
		}
		a.pkgs[sym.pkg] = true
		a.syms[sym] = true
		if sym.recv != "" {
			// Not every type has a line of its own: an interface
			// with unexported methods is listed only by its
			// exported methods, as "type T interface, M()".
			a.syms[symbol{pkg: sym.pkg, kind: "type", name: sym.recv}] = true
		}
	}
	return sc.Err()
}

// parseAPILine turns one line of an API file into a symbol. The forms are
//
//	pkg P, func Name(...) ...
//	pkg P, method (*T) Name(...) ...
//	pkg P, type T ...
//	pkg P, type T struct, Field Type
//	pkg P, type T struct, embedded *pkg.U
//	pkg P, type T interface, Method(...) ...
//	pkg P, var Name Type
//	pkg P, const Name = value  (or: const Name Type)
//
// where "pkg P" may carry a platform, as in "pkg syscall (linux-386)".
func parseAPILine(line string) (symbol, bool) {
	rest, ok := strings.CutPrefix(line, "pkg ")
	if !ok {
		return symbol{}, false
	}
	head, rest, ok := strings.Cut(rest, ", ")
	if !ok {
		return symbol{}, false
	}
	pkg, _, _ := strings.Cut(head, " ")
	kind, rest, ok := strings.Cut(rest, " ")
	if !ok || pkg == "" {
		return symbol{}, false
	}
	s := symbol{pkg: pkg, kind: kind}
	switch kind {
	case "func":
		s.name = upTo(rest, "([")
	case "var", "const":
		s.name = upTo(rest, " ")
	case "method":
		recv, after, ok := strings.Cut(strings.TrimPrefix(rest, "("), ") ")
		if !ok {
			return symbol{}, false
		}
		s.recv = upTo(strings.TrimPrefix(recv, "*"), "[")
		s.name = upTo(after, "([")
	case "type":
		s.name = upTo(rest, " [")
		detail := strings.TrimPrefix(rest[len(s.name):], " ")
		if f, ok := strings.CutPrefix(detail, "struct, "); ok {
			s.kind, s.recv = "field", s.name
			if emb, ok := strings.CutPrefix(f, "embedded "); ok {
				// "embedded *pkg.T[...]": the field is named after T.
				emb = upTo(strings.TrimPrefix(emb, "*"), "[")
				s.name = emb[strings.LastIndex(emb, ".")+1:]
			} else {
				s.name = upTo(f, " ")
			}
		} else if m, ok := strings.CutPrefix(detail, "interface, "); ok {
			s.kind, s.recv = "method", s.name
			s.name = upTo(m, "(")
		}
	default:
		return symbol{}, false
	}
	return s, s.name != ""
}

// upTo returns the prefix of s before the first byte in chars.
func upTo(s, chars string) string {
	if i := strings.IndexAny(s, chars); i >= 0 {
		return s[:i]
	}
	return s
}

// HasPackage reports whether the standard library had the package path.
func (a *API) HasPackage(path string) bool { return a.pkgs[path] }

// has reports whether s is part of the API. Methods are found whether
// the API lists them on T or on *T.
func (a *API) has(s symbol) bool { return a.syms[s] }

// Package oldgo checks that selected packages of this module are "plain
// old Go": code that the Go 1.8 toolchain of a Kubernetes 1.7 tree can
// compile when the packages are vendored there.
//
// Two independent checks are provided. [BuildModule] compiles sources in
// a scratch module whose go.mod says "go 1.8", so that the current
// toolchain rejects language features newer than Go 1.8 (generics, range
// over integers, type aliases, binary literals, ...). [Checker] type-checks
// a package with go/types and reports every standard-library symbol,
// import and builtin it uses that Go 1.8 did not have, judged against the
// API files in $GOROOT/api.
//
// The tests of this package run both checks over the package directories
// listed in oldgo_test.go.
package oldgo

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/build"
	"go/build/constraint"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// ModulePath is the module path of this repository. Checked packages
// import each other below it.
const ModulePath = "github.com/etcdbalance/etcdbalance-go"

// GoRoot returns the GOROOT of the go command on $PATH, the toolchain
// whose API files and export data the checks use.
func GoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT: %v", err)
	}
	root := strings.TrimSpace(string(out))
	if root == "" {
		return "", errors.New("go env GOROOT printed nothing")
	}
	return root, nil
}

// SourceFiles returns the non-test .go files directly inside the package
// directory rel (slash-separated, relative to root), keyed by their
// slash-separated path relative to root.
func SourceFiles(root, rel string) (map[string][]byte, error) {
	dir := filepath.Join(root, filepath.FromSlash(rel))
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	files := make(map[string][]byte)
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		files[rel+"/"+name] = data
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no non-test .go files", dir)
	}
	return files, nil
}

// BuildModule writes files (keyed by slash-separated path) into dir next
// to a go.mod that declares [ModulePath] with the given go line, such as
// "1.8", and runs "go build ./..." there with the current toolchain. The
// go line sets the language version the compiler accepts. The returned
// error carries the compiler output.
func BuildModule(dir, goLine string, files map[string][]byte) error {
	return BuildModuleRequiring(dir, goLine, files, nil, nil)
}

// BuildModuleRequiring is BuildModule for packages that import vendored
// third-party packages: require lists go.mod requirements ("path version"),
// and gosum, if not nil, becomes the module's go.sum.
func BuildModuleRequiring(dir, goLine string, files map[string][]byte, require []string, gosum []byte) error {
	gomod := "module " + ModulePath + "\n\ngo " + goLine + "\n"
	for _, r := range require {
		gomod += "\nrequire " + r + "\n"
	}
	if gosum != nil {
		if err := os.WriteFile(filepath.Join(dir, "go.sum"), gosum, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return err
	}
	for name, data := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	cmd := exec.Command("go", "build", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./... with \"go %s\" in go.mod: %v\n%s", goLine, err, out)
	}
	return nil
}

// A Violation is one use of something Go 1.8 did not have.
type Violation struct {
	File string // slash-separated, relative to the checker's root
	Line int
	Msg  string
}

// String formats v as "file:line: message".
func (v Violation) String() string { return fmt.Sprintf("%s:%d: %s", v.File, v.Line, v.Msg) }

// A Checker type-checks package directories below a module root and
// reports their uses of imports, standard-library symbols, builtins and
// language features newer than its API. A Checker is not safe for
// concurrent use.
type Checker struct {
	root    string
	goroot  string
	api     *API
	checked map[string]bool // slash-separated dirs relative to root

	fset    *token.FileSet
	ctxt    build.Context
	std     types.Importer
	exports map[string]string // import path -> export data file, "" if none
	pkgs    map[string]*loaded

	// Allowed third-party packages (see Allow) and the module directory
	// whose go command lists their export data.
	allowed  map[string]bool
	allowDir string
}

// loaded is a parsed and type-checked package directory.
type loaded struct {
	pkg     *types.Package // nil while being loaded
	files   []*ast.File
	info    *types.Info
	typeErr []types.Error
}

// NewChecker returns a Checker for the package directories checked
// (slash-separated, relative to root, which holds the module path
// [ModulePath]). Checked packages may import each other and nothing but
// the standard library of the API's release. Standard-library packages
// are imported from export data that goroot's go command produces.
func NewChecker(root, goroot string, api *API, checked []string) *Checker {
	c := &Checker{
		root:    root,
		goroot:  goroot,
		api:     api,
		checked: make(map[string]bool),
		fset:    token.NewFileSet(),
		ctxt:    build.Default,
		exports: make(map[string]string),
		pkgs:    make(map[string]*loaded),
	}
	for _, rel := range checked {
		c.checked[rel] = true
	}
	// Select files the way the old toolchain would: its release tags
	// stop at the API's version.
	var minor int
	if _, err := fmt.Sscanf(api.Version, "go1.%d", &minor); err == nil {
		c.ctxt.ReleaseTags = nil
		for i := 1; i <= minor; i++ {
			c.ctxt.ReleaseTags = append(c.ctxt.ReleaseTags, fmt.Sprintf("go1.%d", i))
		}
	}
	c.std = importer.ForCompiler(c.fset, "gc", c.lookup)
	return c
}

// checkedRel returns the directory of the checked package with the
// import path path.
func (c *Checker) checkedRel(path string) (string, bool) {
	rel, ok := strings.CutPrefix(path, ModulePath+"/")
	return rel, ok && c.checked[rel]
}

// Allow lets the checked packages import the given non-standard packages,
// such as the grpc v1.0.4 that a Kubernetes 1.7 tree vendors, whose export
// data the go command builds in the module directory modDir (which requires
// them at the vendored versions). Their own symbols are not measured
// against the API; what the checked packages use of the standard library
// still is. Call Allow before Check.
func (c *Checker) Allow(modDir string, paths ...string) {
	if c.allowed == nil {
		c.allowed = make(map[string]bool)
	}
	c.allowDir = modDir
	for _, p := range paths {
		c.allowed[p] = true
	}
}

// isStd reports whether objects of pkg are measured against the API:
// everything except checked packages, allowed packages, the package being
// checked and universe objects.
func (c *Checker) isStd(pkg *types.Package) bool {
	if pkg == nil || pkg == types.Unsafe || c.allowed[pkg.Path()] {
		return false
	}
	_, checked := c.checkedRel(pkg.Path())
	return !checked && !strings.HasPrefix(pkg.Path(), ModulePath+"/")
}

// Import implements [types.Importer]: checked packages are type-checked
// from source, everything else is read from export data.
func (c *Checker) Import(path string) (*types.Package, error) {
	if rel, ok := c.checkedRel(path); ok {
		l, err := c.load(rel)
		if err != nil {
			return nil, err
		}
		if l.pkg == nil {
			return nil, fmt.Errorf("import cycle through %s", rel)
		}
		return l.pkg, nil
	}
	return c.std.Import(path)
}

// lookup opens the export data of a standard-library package for the
// gc importer.
func (c *Checker) lookup(path string) (io.ReadCloser, error) {
	if _, ok := c.exports[path]; !ok {
		if err := c.listExports([]string{path}); err != nil {
			return nil, err
		}
	}
	file := c.exports[path]
	if file == "" {
		return nil, fmt.Errorf("no export data for %q", path)
	}
	return os.Open(file)
}

// listExports asks the go command, once for all of paths, where the
// export data of those standard-library packages is, building it into
// the build cache if needed. Paths that cannot be standard-library
// packages are not passed to the go command at all.
func (c *Checker) listExports(paths []string) error {
	var args, allowed []string
	for _, p := range paths {
		if _, ok := c.exports[p]; ok {
			continue
		}
		c.exports[p] = ""
		first, _, _ := strings.Cut(p, "/")
		if c.allowed[p] {
			allowed = append(allowed, p)
		} else if p != "" && p != "C" && !strings.ContainsAny(first, ".-:") && !strings.HasPrefix(p, "_") {
			args = append(args, p)
		}
	}
	if err := c.goListExports(c.goroot, "GOFLAGS=", args); err != nil {
		return err
	}
	return c.goListExports(c.allowDir, "GOFLAGS=-mod=mod", allowed)
}

// goListExports records the export data files of paths, listed by the go
// command in dir.
func (c *Checker) goListExports(dir, goflags string, paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	cmd := exec.Command("go", append([]string{"list", "-e", "-export", "-f", "{{.ImportPath}}\t{{.Export}}"}, paths...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), goflags, "GOTOOLCHAIN=local", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go list -export: %v\n%s", err, stderr.Bytes())
	}
	for _, line := range strings.Split(string(out), "\n") {
		if path, file, ok := strings.Cut(line, "\t"); ok {
			c.exports[path] = file
		}
	}
	return nil
}

// load parses and type-checks the package directory rel, once. Files are
// selected with the build constraints of the API's release.
func (c *Checker) load(rel string) (*loaded, error) {
	if l, ok := c.pkgs[rel]; ok {
		return l, nil
	}
	l := &loaded{}
	c.pkgs[rel] = l
	bp, err := c.ctxt.ImportDir(filepath.Join(c.root, filepath.FromSlash(rel)), 0)
	if err != nil {
		delete(c.pkgs, rel)
		return nil, err
	}
	var stdImports []string
	for _, p := range bp.Imports {
		if _, ok := c.checkedRel(p); !ok {
			stdImports = append(stdImports, p)
		}
	}
	if err := c.listExports(stdImports); err != nil {
		delete(c.pkgs, rel)
		return nil, err
	}
	for _, name := range append(bp.GoFiles, bp.CgoFiles...) {
		f, err := parser.ParseFile(c.fset, filepath.Join(bp.Dir, name), nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			delete(c.pkgs, rel)
			return nil, err
		}
		l.files = append(l.files, f)
	}
	l.info = &types.Info{
		Types:      make(map[ast.Expr]types.TypeAndValue),
		Uses:       make(map[*ast.Ident]types.Object),
		Selections: make(map[*ast.SelectorExpr]*types.Selection),
	}
	conf := types.Config{
		Importer:    c,
		FakeImportC: true,
		Error:       func(err error) { l.typeErr = append(l.typeErr, err.(types.Error)) },
	}
	pkg, _ := conf.Check(ModulePath+"/"+rel, c.fset, l.files, l.info)
	l.pkg = pkg
	return l, nil
}

// Check reports everything in the package directory rel (one of the
// checked directories) that its API's release did not have: imports
// other than that release's standard library and the checked packages,
// standard-library symbols, new builtins and predeclared types, type
// parameters, and //go:build lines that the old toolchain would not see.
// Only files that the old release's build constraints select for the
// current GOOS and GOARCH are type-checked.
func (c *Checker) Check(rel string) ([]Violation, error) {
	if !c.checked[rel] {
		return nil, fmt.Errorf("%s is not a checked package", rel)
	}
	l, err := c.load(rel)
	if err != nil {
		return nil, err
	}
	r := &report{c: c, seen: make(map[Violation]bool)}
	if err := r.buildLines(rel); err != nil {
		return nil, err
	}
	forbidden := make(map[string]bool)
	for _, f := range l.files {
		for _, spec := range f.Imports {
			path := strings.Trim(spec.Path.Value, "`\"")
			if msg := c.importProblem(path); msg != "" {
				forbidden[path] = true
				r.add(spec.Path.Pos(), msg)
			}
		}
	}
	for _, e := range l.typeErr {
		if i := strings.Index(e.Msg, "could not import "); i >= 0 {
			path, _, _ := strings.Cut(e.Msg[i+len("could not import "):], " ")
			if forbidden[path] {
				continue // already reported as a forbidden import
			}
		}
		r.add(e.Pos, "type error: "+e.Msg)
	}
	for _, f := range l.files {
		r.syntax(f, l.info)
	}
	for id, obj := range l.info.Uses {
		r.use(id, obj)
	}
	for sel, s := range l.info.Selections {
		r.selection(sel.Sel.Pos(), s)
	}
	sort.Slice(r.out, func(i, j int) bool {
		a, b := r.out[i], r.out[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Msg < b.Msg
	})
	return r.out, nil
}

// importProblem explains why path may not be imported, or returns "".
func (c *Checker) importProblem(path string) string {
	if _, ok := c.checkedRel(path); ok || path == "unsafe" || c.allowed[path] || c.api.HasPackage(path) {
		return ""
	}
	if c.exports[path] != "" {
		return fmt.Sprintf("import %q (package not in %s API)", path, c.api.Version)
	}
	return fmt.Sprintf("import %q (only the standard library and checked packages may be imported)", path)
}

// report collects the violations of one package.
type report struct {
	c    *Checker
	out  []Violation
	seen map[Violation]bool
}

func (r *report) add(pos token.Pos, msg string) {
	p := r.c.fset.Position(pos)
	file := p.Filename
	if rel, err := filepath.Rel(r.c.root, file); err == nil {
		file = filepath.ToSlash(rel)
	}
	v := Violation{File: file, Line: p.Line, Msg: msg}
	if !r.seen[v] {
		r.seen[v] = true
		r.out = append(r.out, v)
	}
}

// notIn reports the standard-library symbol s at pos unless the API has
// it. Unexported and internal symbols are not in any API file; they are
// reachable only through something exported, which is checked instead.
func (r *report) notIn(pos token.Pos, s symbol) {
	if r.c.api.has(s) || !token.IsExported(s.name) || (s.recv != "" && !token.IsExported(s.recv)) || !public(s.pkg) {
		return
	}
	r.add(pos, fmt.Sprintf("%s (not in %s API)", s, r.c.api.Version))
}

// public reports whether path can be imported from outside the standard
// library.
func public(path string) bool {
	if strings.HasPrefix(path, "vendor/") {
		return false
	}
	for _, elem := range strings.Split(path, "/") {
		if elem == "internal" {
			return false
		}
	}
	return true
}

// buildLines reports files (including those excluded for this platform)
// that carry a //go:build constraint without the // +build equivalent:
// Go 1.8 ignores //go:build and would compile them unconditionally.
func (r *report) buildLines(rel string) error {
	files, err := SourceFiles(r.c.root, rel)
	if err != nil {
		return err
	}
	for name, src := range files {
		goBuild, plusBuild := 0, false
		for i, line := range strings.Split(string(src), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "package ") {
				break
			}
			if constraint.IsGoBuild(line) {
				goBuild = i + 1
			}
			plusBuild = plusBuild || constraint.IsPlusBuild(line)
		}
		if goBuild > 0 && !plusBuild {
			r.out = append(r.out, Violation{File: name, Line: goBuild,
				Msg: "//go:build without a // +build line (Go 1.8 ignores //go:build)"})
		}
	}
	return nil
}

// newerUniverse lists predeclared identifiers added after Go 1.8.
var newerUniverse = map[string]string{
	"any":        "go1.18",
	"comparable": "go1.18",
	"min":        "go1.21",
	"max":        "go1.21",
	"clear":      "go1.21",
}

// go18Unsafe lists the contents of package unsafe in Go 1.8.
var go18Unsafe = map[string]bool{"Alignof": true, "Offsetof": true, "Sizeof": true, "Pointer": true}

// syntax reports type parameters and fields set in composite literals of
// standard-library struct types.
func (r *report) syntax(f *ast.File, info *types.Info) {
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncType:
			if n.TypeParams != nil {
				r.add(n.TypeParams.Pos(), "type parameters (generics need go1.18)")
			}
		case *ast.TypeSpec:
			if n.TypeParams != nil {
				r.add(n.TypeParams.Pos(), "type parameters (generics need go1.18)")
			}
		case *ast.CompositeLit:
			t := info.TypeOf(n)
			if t == nil {
				break
			}
			tn := r.c.stdTypeName(t)
			if _, isStruct := deref(t).Underlying().(*types.Struct); tn == nil || !isStruct {
				break
			}
			for _, elt := range n.Elts {
				if kv, ok := elt.(*ast.KeyValueExpr); ok {
					if key, ok := kv.Key.(*ast.Ident); ok {
						r.notIn(key.Pos(), symbol{pkg: tn.Pkg().Path(), kind: "field", recv: tn.Name(), name: key.Name})
					}
				}
			}
		}
		return true
	})
}

// use reports a qualified identifier, builtin or predeclared type.
// Fields and methods are reported from selections and literals instead.
func (r *report) use(id *ast.Ident, obj types.Object) {
	pkg := obj.Pkg()
	switch {
	case pkg == nil:
		if since, ok := newerUniverse[obj.Name()]; ok && obj.Parent() == types.Universe {
			r.add(id.Pos(), fmt.Sprintf("predeclared %s (added in %s)", obj.Name(), since))
		}
		return
	case pkg == types.Unsafe:
		if !go18Unsafe[obj.Name()] {
			r.add(id.Pos(), fmt.Sprintf("unsafe.%s (not in %s)", obj.Name(), r.c.api.Version))
		}
		return
	case !r.c.isStd(pkg):
		return
	}
	var kind string
	switch obj := obj.(type) {
	case *types.Func:
		if obj.Signature().Recv() != nil {
			return
		}
		kind = "func"
	case *types.Var:
		if obj.IsField() {
			return
		}
		kind = "var"
	case *types.Const:
		kind = "const"
	case *types.TypeName:
		kind = "type"
	default:
		return
	}
	r.notIn(id.Pos(), symbol{pkg: pkg.Path(), kind: kind, name: obj.Name()})
}

// selection reports a field or method selected from a standard-library
// type, directly or through embedded fields. The API files list the
// fields each struct declares, including embedded ones, and the full
// method set of each type, including promoted and interface methods.
// Each struct along the embedding path is therefore checked for its
// field, while a method is checked on the first standard-library type
// of the path.
func (r *report) selection(pos token.Pos, s *types.Selection) {
	obj := s.Obj()
	if !r.c.isStd(obj.Pkg()) {
		return
	}
	_, isMethod := obj.(*types.Func)
	t := s.Recv()
	path := s.Index()
	for i, idx := range path {
		tn := r.c.stdTypeName(t)
		exported := tn != nil && tn.Exported()
		if isMethod && exported {
			r.notIn(pos, symbol{pkg: tn.Pkg().Path(), kind: "method", recv: tn.Name(), name: obj.Name()})
			return
		}
		if i == len(path)-1 {
			break
		}
		st, ok := deref(t).Underlying().(*types.Struct)
		if !ok {
			return
		}
		field := st.Field(idx)
		if exported {
			r.notIn(pos, symbol{pkg: tn.Pkg().Path(), kind: "field", recv: tn.Name(), name: field.Name()})
		}
		t = field.Type()
	}
	if isMethod {
		// An interface method selected through a non-standard or
		// unnamed interface: check it on the interface declaring it.
		if recv := obj.(*types.Func).Signature().Recv(); recv != nil {
			if tn := r.c.stdTypeName(recv.Type()); tn != nil {
				r.notIn(pos, symbol{pkg: tn.Pkg().Path(), kind: "method", recv: tn.Name(), name: obj.Name()})
			}
		}
		return
	}
	if tn := r.c.stdTypeName(t); tn != nil {
		r.notIn(pos, symbol{pkg: tn.Pkg().Path(), kind: "field", recv: tn.Name(), name: obj.Name()})
	}
}

// stdTypeName returns the standard-library type name under which the API
// files list t (after one pointer indirection), or nil. An alias keeps
// its own name: os.FileInfo is listed as such, not as io/fs.FileInfo.
func (c *Checker) stdTypeName(t types.Type) *types.TypeName {
	if p, ok := types.Unalias(t).(*types.Pointer); ok {
		t = p.Elem()
	}
	for {
		switch u := t.(type) {
		case *types.Alias:
			if c.isStd(u.Obj().Pkg()) {
				return u.Obj()
			}
			t = u.Rhs()
		case *types.Named:
			if c.isStd(u.Obj().Pkg()) {
				return u.Obj()
			}
			return nil
		default:
			return nil
		}
	}
}

// deref removes aliases and one pointer indirection from t.
func deref(t types.Type) types.Type {
	t = types.Unalias(t)
	if p, ok := t.(*types.Pointer); ok {
		return types.Unalias(p.Elem())
	}
	return t
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The vintage rows run the etcd v3 client of Kubernetes 1.7 (clientv3
// v3.1.5 on grpc v1.0.4), stock and with the etcd3 patch of
// examples/apiserver-v1.7. That grpc cannot share a binary with this one,
// so each client is a process of the legacy module's vintage command, and
// each request crosses a pipe to it (tens of microseconds, included in the
// latencies). Reads are serializable there, as 1.7's are with its default
// --etcd-quorum-read=false.

// vintageBuild builds both vintage drivers once per run.
var vintageBuild struct {
	once           sync.Once
	dir            string
	stock, patched string
	err            error
}

// vintageBinary returns the driver for "stock" or "patched", building both
// on first use with the legacy module's own go.mod.
func vintageBinary(which string) (string, error) {
	v := &vintageBuild
	v.once.Do(func() {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			v.err = fmt.Errorf("cannot locate the legacy module")
			return
		}
		mod := filepath.Join(filepath.Dir(file), "..", "..", "legacy")
		if v.dir, v.err = os.MkdirTemp("", "bench-vintage-"); v.err != nil {
			return
		}
		cmd := exec.Command("go", "run", "./cmd/vintage", "build", v.dir)
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.Output()
		if err != nil {
			msg := err.Error()
			if ee, ok := err.(*exec.ExitError); ok {
				msg = strings.TrimSpace(string(ee.Stderr))
			}
			v.err = fmt.Errorf("building the vintage drivers in %s: %s", mod, msg)
			return
		}
		paths := strings.Fields(string(out))
		if len(paths) != 2 {
			v.err = fmt.Errorf("building the vintage drivers: unexpected output %q", out)
			return
		}
		v.stock, v.patched = paths[0], paths[1]
	})
	if v.err != nil {
		return "", v.err
	}
	if which == "patched" {
		return v.patched, nil
	}
	return v.stock, nil
}

// removeVintageBuild deletes the built drivers.
func removeVintageBuild() {
	if vintageBuild.dir != "" {
		os.RemoveAll(vintageBuild.dir)
	}
}

// vintageDriver is one vintage process holding one client.
type vintageDriver struct {
	cmd    *exec.Cmd
	prefix string

	mu      sync.Mutex
	in      io.WriteCloser
	nextID  int64
	waiting map[int64]chan vintageAnswer
	events  map[int64]*atomic.Int64
	exited  chan struct{}
}

type vintageAnswer struct {
	member int
	kind   string
}

func newVintageDriver(which string, endpoints []string, prefix string) (*vintageDriver, error) {
	bin, err := vintageBinary(which)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-endpoints", strings.Join(endpoints, ","), "-clients", "1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &vintageDriver{cmd: cmd, prefix: prefix, in: in, waiting: map[int64]chan vintageAnswer{},
		events: map[int64]*atomic.Int64{}, exited: make(chan struct{})}
	out := bufio.NewScanner(outPipe)
	if !out.Scan() || !strings.Contains(out.Text(), `"ready"`) {
		in.Close()
		_ = cmd.Wait()
		return nil, fmt.Errorf("vintage driver did not start: %q", out.Text())
	}
	if _, err := io.WriteString(in, "serve\n"); err != nil {
		return nil, err
	}
	go d.read(out)
	return d, nil
}

// read hands each answer to the request waiting for it.
func (d *vintageDriver) read(out *bufio.Scanner) {
	defer close(d.exited)
	for out.Scan() {
		f := strings.Fields(out.Text())
		if len(f) != 3 {
			continue
		}
		id, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		d.mu.Lock()
		if f[1] == "events" {
			if c := d.events[id]; c != nil {
				n, _ := strconv.Atoi(f[2])
				c.Add(int64(n))
			}
			d.mu.Unlock()
			continue
		}
		ch := d.waiting[id]
		delete(d.waiting, id)
		d.mu.Unlock()
		if ch != nil {
			m, _ := strconv.Atoi(f[1])
			ch <- vintageAnswer{member: m, kind: f[2]}
		}
	}
}

func (d *vintageDriver) send(line func(id int64) string, ch chan vintageAnswer, events *atomic.Int64) (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nextID++
	id := d.nextID
	if ch != nil {
		d.waiting[id] = ch
	}
	if events != nil {
		d.events[id] = events
	}
	_, err := io.WriteString(d.in, line(id))
	return id, err
}

func (d *vintageDriver) do(ctx context.Context, o op, key, value string, pr *probe) error {
	ms := int64(requestTimeout / time.Millisecond)
	if dl, ok := ctx.Deadline(); ok {
		ms = max(int64(time.Until(dl)/time.Millisecond), 1)
	}
	ch := make(chan vintageAnswer, 1)
	id, err := d.send(func(id int64) string {
		switch o {
		case opList:
			return fmt.Sprintf("%d list %d %s\n", id, ms, d.prefix)
		case opPut:
			return fmt.Sprintf("%d put %d %s %s\n", id, ms, key, value)
		}
		return fmt.Sprintf("%d get %d %s\n", id, ms, key)
	}, ch, nil)
	if err != nil {
		return err
	}
	select {
	case a := <-ch:
		return vintageResult(a, pr)
	case <-ctx.Done():
		d.mu.Lock()
		delete(d.waiting, id)
		d.mu.Unlock()
		return ctx.Err()
	case <-d.exited:
		return fmt.Errorf("vintage driver exited")
	}
}

// vintageResult turns an answer into what errorKind reports.
func vintageResult(a vintageAnswer, pr *probe) error {
	switch a.kind {
	case "ok":
		pr.member = a.member
		return nil
	case "deadline":
		return context.DeadlineExceeded
	case "canceled":
		return context.Canceled
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.ToLower(c.String()) == a.kind {
			return status.Error(c, "vintage: "+a.kind)
		}
	}
	return fmt.Errorf("vintage: %s", a.kind)
}

func (d *vintageDriver) watch(ctx context.Context, events *atomic.Int64) {
	id, err := d.send(func(id int64) string { return fmt.Sprintf("%d watch %s\n", id, d.prefix) }, nil, events)
	if err != nil {
		return
	}
	select {
	case <-ctx.Done():
	case <-d.exited:
		return
	}
	_, _ = d.send(func(int64) string { return fmt.Sprintf("0 unwatch %d\n", id) }, nil, nil)
}

func (d *vintageDriver) close() error {
	d.mu.Lock()
	_, _ = io.WriteString(d.in, "end\n")
	d.in.Close()
	d.mu.Unlock()
	<-d.exited
	return d.cmd.Wait()
}

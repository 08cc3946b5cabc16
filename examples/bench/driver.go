package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// driver sends the requests of one client.
type driver interface {
	// do sends one request and, when it succeeded, may set pr.member to
	// the member that answered.
	do(ctx context.Context, o op, key, value string, pr *probe) error
	// watch watches the pod prefix, counting events, until ctx ends.
	watch(ctx context.Context, events *atomic.Int64)
	close() error
}

// v3Driver is a clientv3 client.
type v3Driver struct {
	cli    *clientv3.Client
	prefix string
	serial bool // Gets are serializable (gc-pauses)
}

func (d *v3Driver) do(ctx context.Context, o op, key, value string, pr *probe) error {
	ctx = context.WithValue(ctx, probeKey{}, pr)
	var err error
	switch o {
	case opGet:
		if d.serial {
			_, err = d.cli.Get(ctx, key, clientv3.WithSerializable())
		} else {
			_, err = d.cli.Get(ctx, key)
		}
	case opList:
		_, err = d.cli.Get(ctx, d.prefix, clientv3.WithPrefix())
	case opPut:
		_, err = d.cli.Put(ctx, key, value)
	}
	return err
}

// watch keeps one watch open on the prefix, on a Watcher of its own so
// that it is a gRPC stream of its own (one Watcher multiplexes all its
// watches on one stream), and opens it again if it fails.
func (d *v3Driver) watch(ctx context.Context, events *atomic.Int64) {
	w := clientv3.NewWatcher(d.cli)
	defer w.Close()
	for ctx.Err() == nil {
		for resp := range w.Watch(ctx, d.prefix, clientv3.WithPrefix()) {
			events.Add(int64(len(resp.Events)))
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *v3Driver) close() error { return d.cli.Close() }

// v2Driver is an etcd v2 client. Its member attribution is done by the
// countingTransport underneath, because the v2 client does not pass the
// request's context down to the transport.
type v2Driver struct {
	kapi    client.KeysAPI
	prefix  string // without the trailing slash: a v2 directory
	closeFn func()
	tr      *http.Transport
}

func (d *v2Driver) do(ctx context.Context, o op, key, value string, _ *probe) error {
	var err error
	switch o {
	case opGet:
		// Not quorum: the apiserver of the incident (1.7) read with
		// quorum=false unless --etcd-quorum-read was set.
		_, err = d.kapi.Get(ctx, key, nil)
	case opList:
		_, err = d.kapi.Get(ctx, d.prefix, &client.GetOptions{Recursive: true})
	case opPut:
		_, err = d.kapi.Set(ctx, key, value, nil)
	}
	return err
}

// watch long-polls the prefix for one event at a time, as the v2 API
// works, and starts over from the current index after an error (the
// history of 1000 events may have moved past it).
func (d *v2Driver) watch(ctx context.Context, events *atomic.Int64) {
	for ctx.Err() == nil {
		w := d.kapi.Watcher(d.prefix, &client.WatcherOptions{Recursive: true})
		for {
			if _, err := w.Next(ctx); err != nil {
				break
			}
			events.Add(1)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *v2Driver) close() error {
	d.closeFn()
	d.tr.CloseIdleConnections()
	return nil
}

// countingTransport is the HTTP transport under a v2 client (below
// v2compat's transport, when there is one). It records which member
// answered each key request, as the v3 interceptor does: a request
// answered without a transport error or a 5xx status was served by the
// host it was sent to. Watches (wait=true) are not requests.
type countingTransport struct {
	inner *http.Transport
	index map[string]int // host:port -> member index
	s     *session
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	counted := t.s.measuring.Load() && strings.HasPrefix(req.URL.Path, "/v2/keys/") &&
		req.URL.Query().Get("wait") != "true"
	resp, err := t.inner.RoundTrip(req)
	if counted && err == nil && resp.StatusCode < 500 {
		if i, ok := t.index[req.URL.Host]; ok {
			t.s.served[i].Add(1)
		}
	}
	return resp, err
}

// CancelRequest is what every v2 client calls to cancel; with Go's
// transport the request's Cancel channel does the work, so passing it on
// is enough.
func (t *countingTransport) CancelRequest(req *http.Request) {
	//lint:ignore SA1019 the v2 client's CancelableTransport requires it.
	t.inner.CancelRequest(req)
}

// errorKind names an error for the report.
func errorKind(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		if s.Code() == codes.DeadlineExceeded {
			return "deadline"
		}
		return strings.ToLower(s.Code().String())
	}
	var ce *client.ClusterError
	if errors.As(err, &ce) {
		return "v2-cluster-error"
	}
	var ee client.Error
	if errors.As(err, &ee) {
		return "v2-etcd-error"
	}
	return "other"
}

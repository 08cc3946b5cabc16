//go:build tools

package tools

import (
	_ "github.com/stretchr/testify/require"
	_ "go.etcd.io/etcd/client/v3"
	_ "go.etcd.io/etcd/server/v3/embed"
	_ "go.uber.org/atomic"
	_ "go.uber.org/goleak"
	_ "google.golang.org/grpc"
)

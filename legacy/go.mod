module github.com/etcdbalance/etcdbalance-go/legacy

go 1.26.0

// The main module requires grpc v1.83, which has no grpc.Balancer any more;
// requiring it would lift grpc (and x/net, protobuf) past the old API. The
// replace lines pin the versions of the Kubernetes 1.7 vintage (DESIGN §5b).
replace (
	github.com/beorn7/perks => github.com/beorn7/perks v0.0.0-20180321164747-3a771d992973
	github.com/etcdbalance/etcdbalance-go => ../
	github.com/golang/protobuf => github.com/golang/protobuf v1.1.0
	github.com/grpc-ecosystem/go-grpc-prometheus => github.com/grpc-ecosystem/go-grpc-prometheus v0.0.0-20160910222444-6b7015e65d36
	github.com/grpc-ecosystem/grpc-gateway => github.com/grpc-ecosystem/grpc-gateway v1.1.0
	github.com/matttproud/golang_protobuf_extensions => github.com/matttproud/golang_protobuf_extensions v1.0.1
	github.com/prometheus/client_golang => github.com/prometheus/client_golang v0.8.0
	github.com/prometheus/client_model => github.com/prometheus/client_model v0.0.0-20180712105110-5c3871d89910
	github.com/prometheus/common => github.com/prometheus/common v0.0.0-20181113130724-41aa239b4cce
	github.com/prometheus/procfs => github.com/prometheus/procfs v0.0.0-20181005140218-185b4288413d
	golang.org/x/net => golang.org/x/net v0.0.0-20180724234803-3673e40ba225
	golang.org/x/text => golang.org/x/text v0.3.0
	google.golang.org/grpc => google.golang.org/grpc v1.0.4
)

require (
	github.com/coreos/etcd v3.1.5+incompatible
	github.com/etcdbalance/etcdbalance-go v0.0.0-00010101000000-000000000000
	github.com/ghodss/yaml v1.0.0
	github.com/prometheus/client_golang v1.20.5
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.61.0
	google.golang.org/grpc v1.83.2
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/grpc-ecosystem/go-grpc-prometheus v0.0.0-00010101000000-000000000000 // indirect
	github.com/grpc-ecosystem/grpc-gateway v0.0.0-00010101000000-000000000000 // indirect
	github.com/matttproud/golang_protobuf_extensions v0.0.0-00010101000000-000000000000 // indirect
	github.com/prometheus/client_model v0.6.1 // indirect
	github.com/prometheus/common v0.62.0 // indirect
	github.com/prometheus/procfs v0.15.1 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.9.0 // indirect
	gopkg.in/yaml.v2 v2.4.0 // indirect
)

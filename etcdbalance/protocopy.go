package etcdbalance

import "reflect"

// copyFields sets the exported fields of dst to those of src, two pointers
// to the same generated message type. The unexported ones are neither read
// nor written: on etcd 3.7's messages they hold protobuf's internal state,
// which marshalling the message elsewhere writes atomically, so a plain
// struct copy would race with a send in flight (and vet rejects it as a
// copied lock).
func copyFields(dst, src any) {
	d, s := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem()
	t := d.Type()
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).IsExported() {
			d.Field(i).Set(s.Field(i))
		}
	}
}

//go:build opendht

package opendht

// #include <stdbool.h>
// #include <stdint.h>
// #include <stddef.h>
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// MaxValue is the most a value may hold (OpenDHT's own limit is 64 KiB); a larger one is
// refused before it is copied.
const maxCopy = MaxValue + 1

//export dtValue
func dtValue(h C.uintptr_t, data unsafe.Pointer, size C.size_t) {
	d, ok := cgo.Handle(h).Value().(*runner)
	if !ok {
		return
	}
	n := int(size)
	if n > maxCopy {
		n = maxCopy // enough to know it is too big, never more
	}
	d.value(C.GoBytes(data, C.int(n)))
}

//export dtPutDone
func dtPutDone(h C.uintptr_t, ok C.bool) {
	d, found := cgo.Handle(h).Value().(*runner)
	if !found {
		return
	}
	if ok {
		d.putOK.Add(1)
	} else {
		d.putFailed.Add(1)
	}
}

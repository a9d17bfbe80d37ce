// Package opendht tests the OpenDHT bridge end to end: a dialtrap binary built with
// -tags opendht against Debian's dhtnode on loopback. Its tests build only with the tag
// (make e2e runs them so: CGO_ENABLED=1 go test -tags opendht ./test/opendht).
package opendht

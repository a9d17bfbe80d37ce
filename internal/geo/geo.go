// Package geo names the country a source address is registered in, from the IP2Location LITE
// country database that github.com/phuslu/iploc embeds in the binary: no file to install, no
// download at run time, about 20 ns a lookup. The data is licensed CC BY-SA 4.0 and must be
// attributed wherever it is shown (Attribution; docs/analytics.md, the dashboard's footer).
// It has no ASN data: origins are countries only.
package geo

import (
	"net/netip"

	"github.com/phuslu/iploc"
)

// Unknown is the country of an address the data does not place: private, loopback,
// reserved or unallocated space (ISO 3166 reserves ZZ for such use).
const Unknown = "ZZ"

// Attribution is the notice the data's licence asks for.
const Attribution = "This product includes IP2Location LITE data available from https://lite.ip2location.com (CC BY-SA 4.0)."

// Country returns the ISO 3166-1 alpha-2 code of the country a is registered in, or Unknown.
func Country(a netip.Addr) string {
	a = a.Unmap()
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() {
		return Unknown
	}
	c := iploc.IPCountry(a)
	if len(c) != 2 || c == "--" {
		return Unknown
	}
	return c
}

// CountryOf is Country for an address in text; Unknown when s is not one.
func CountryOf(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return Unknown
	}
	return Country(a.WithZone(""))
}

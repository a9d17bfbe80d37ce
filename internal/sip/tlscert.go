package sip

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/dialtrap/dialtrap/internal/fsutil"
)

// Self-signed certificate files in the data directory.
const (
	SelfSignedCert = "sip-tls-cert.pem"
	SelfSignedKey  = "sip-tls-key.pem"
)

// TLSConfig returns the server TLS config for SIP over TLS: the operator's certificate if
// certFile and keyFile are set, else a self-signed one kept in dataDir (made on first start,
// reused after, never prompting).
//
// A self-signed pair that no longer loads (a key that does not match the certificate, left by
// an older version started twice at once, or a damaged file) is made anew, with a warning:
// nobody relies on its identity. The operator's own files are never replaced.
func TLSConfig(certFile, keyFile, dataDir string, log *slog.Logger) (*tls.Config, error) {
	selfSigned := certFile == ""
	if selfSigned {
		certFile, keyFile = filepath.Join(dataDir, SelfSignedCert), filepath.Join(dataDir, SelfSignedKey)
		if err := ensureSelfSigned(certFile, keyFile, false); err != nil {
			return nil, err
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil && selfSigned {
		if log != nil {
			log.Warn("the self-signed SIP TLS certificate and key in the data directory do not load together; making a new pair",
				"cert", certFile, "key", keyFile, "err", err)
		}
		if err := ensureSelfSigned(certFile, keyFile, true); err != nil {
			return nil, err
		}
		cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("load SIP TLS certificate %s and key %s (check -t/-k point at PEM files that match): %w", certFile, keyFile, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		// Scanners run old TLS stacks; a honeypot wants their handshake to succeed.
		MinVersion: tls.VersionTLS10,
		// No resumption is needed, and TLS 1.3 session tickets arrive after the handshake as
		// a record some SIP tools (sipsak) take for the reply and then fail on.
		SessionTicketsDisabled: true,
	}, nil
}

// ensureSelfSigned makes a self-signed pair unless both files exist (or always, with anew).
func ensureSelfSigned(certFile, keyFile string, anew bool) error {
	_, cerr := os.Stat(certFile)
	_, kerr := os.Stat(keyFile)
	if cerr == nil && kerr == nil && !anew {
		return nil
	}
	if anew {
		cerr = fs.ErrNotExist
	}
	if !errors.Is(cerr, fs.ErrNotExist) && cerr != nil {
		return fmt.Errorf("check SIP TLS certificate %s: %w", certFile, cerr)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate SIP TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return fmt.Errorf("generate certificate serial: %w", err)
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "pbx"
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create self-signed SIP TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode SIP TLS key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o750); err != nil {
		return fmt.Errorf("create data directory for the SIP TLS certificate: %w", err)
	}
	if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(certFile, "CERTIFICATE", der, 0o644)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := fsutil.WriteFileAtomic(path, b, mode); err != nil {
		return fmt.Errorf("write %s (is --data-dir writable?): %w", path, err)
	}
	return nil
}

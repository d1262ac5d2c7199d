package apikey

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/credentials"
)

// digest is a key's SHA-256.
type digest = [sha256.Size]byte

// Set is the keys a server accepts. Its zero value and nil accept none;
// New returns nil when no key and no file are given, meaning the API is
// open. It is safe for concurrent use.
type Set struct {
	file   string
	static []digest
	all    atomic.Pointer[[]digest] // static and the file's, as last read
}

// ErrNoKeys is returned by New when the keys given are all empty.
var ErrNoKeys = errors.New("apikey: empty API key")

// New makes the set of keys (the --api-key values) and those in file (the
// --api-keys-file, "" for none). With neither it returns nil: no
// authentication. An error names the file and line at fault, never a key.
func New(keys []string, file string) (*Set, error) {
	if len(keys) == 0 && file == "" {
		return nil, nil
	}
	s := &Set{file: file}
	for i, k := range keys {
		if strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%w (key %d of %d)", ErrNoKeys, i+1, len(keys))
		}
		s.static = append(s.static, sha256.Sum256([]byte(k)))
	}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the keys file again and, if it reads, replaces the file's
// keys with its contents; on an error the keys stay as they were. It
// returns how many keys the set now holds.
func (s *Set) Reload() (int, error) {
	all := append([]digest(nil), s.static...)
	if s.file != "" {
		data, err := os.ReadFile(s.file)
		if err != nil {
			return len(*s.loaded()), fmt.Errorf("apikey: keys file: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for line := 1; sc.Scan(); line++ {
			k := strings.TrimSpace(sc.Text())
			if k == "" || strings.HasPrefix(k, "#") {
				continue
			}
			if strings.ContainsAny(k, " \t") {
				return len(*s.loaded()), fmt.Errorf("apikey: keys file %s line %d: a key must not contain spaces", s.file, line)
			}
			all = append(all, sha256.Sum256([]byte(k)))
		}
		if err := sc.Err(); err != nil {
			return len(*s.loaded()), fmt.Errorf("apikey: keys file %s: %w", s.file, err)
		}
	}
	s.all.Store(&all)
	return len(all), nil
}

func (s *Set) loaded() *[]digest {
	if p := s.all.Load(); p != nil {
		return p
	}
	return &[]digest{}
}

// File is the keys file ("" if none).
func (s *Set) File() string { return s.file }

// Valid reports whether key is one of the set's. It compares key's digest
// with every key's, in constant time each, and never stops early, so the
// time taken says nothing about which key matched or how much of one.
func (s *Set) Valid(key string) bool {
	if s == nil || key == "" {
		return false
	}
	d := sha256.Sum256([]byte(key))
	ok := 0
	for _, k := range *s.loaded() {
		ok |= subtle.ConstantTimeCompare(d[:], k[:])
	}
	return ok == 1
}

// Bearer returns the credential of an Authorization header value of the
// "Bearer" scheme (case-insensitive, as RFC 9110 says of schemes), and
// false for any other value.
func Bearer(authorization string) (string, bool) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

// PerRPC returns gRPC call credentials that send key as the metadata
// "authorization: Bearer KEY" on every call, over TLS or not (as
// OpenAI-style clients send theirs over plain HTTP when told to).
func PerRPC(key string) credentials.PerRPCCredentials { return bearerCreds{key} }

type bearerCreds struct{ key string }

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.key}, nil
}

func (bearerCreds) RequireTransportSecurity() bool { return false }

// String keeps the key out of anything that prints the credentials.
func (bearerCreds) String() string { return "Bearer [redacted]" }

// Package secret protects upstream API keys at rest: AES-256-GCM encryption
// under the operator's ENCRYPTION_KEY, the key file used when no key is
// configured, and the masked form shown instead of a key.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the length of an encryption key in bytes (AES-256).
const KeySize = 32

// version1 is the first byte of every ciphertext written by this package:
// version || 12-byte nonce || AES-256-GCM sealed data (including the tag).
// A later format (another algorithm, a key ID) gets another version byte.
const version1 byte = 1

// ErrDecrypt means a ciphertext could not be opened: it was altered, is not
// one of ours, or was encrypted under another key. The usual cause is an
// ENCRYPTION_KEY that changed after the data was written.
var ErrDecrypt = errors.New("cannot decrypt: the data was altered or encrypted with a different key (did ENCRYPTION_KEY change since it was stored?)")

// Cipher encrypts and decrypts small secrets with AES-256-GCM. It is safe for
// concurrent use.
type Cipher struct {
	aead cipher.AEAD
}

// NewCipher returns a Cipher for key, which must be KeySize bytes.
func NewCipher(key []byte) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("encryption key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("create aes cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("create gcm: %w", err)
	}
	return &Cipher{aead: aead}, nil
}

// Encrypt seals plain under a fresh random nonce. The result starts with a
// format version byte followed by the nonce.
func (c *Cipher) Encrypt(plain []byte) ([]byte, error) {
	ns := c.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plain)+c.aead.Overhead())
	out[0] = version1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	return c.aead.Seal(out, out[1:], plain, nil), nil
}

// Decrypt opens a ciphertext made by Encrypt. Any failure (truncated,
// unknown version, altered, wrong key) returns an error wrapping ErrDecrypt.
func (c *Cipher) Decrypt(ciphertext []byte) ([]byte, error) {
	ns := c.aead.NonceSize()
	if len(ciphertext) < 1+ns+c.aead.Overhead() {
		return nil, fmt.Errorf("ciphertext too short: %w", ErrDecrypt)
	}
	if ciphertext[0] != version1 {
		return nil, fmt.Errorf("unknown ciphertext version %d: %w", ciphertext[0], ErrDecrypt)
	}
	plain, err := c.aead.Open(nil, ciphertext[1:1+ns], ciphertext[1+ns:], nil)
	if err != nil {
		return nil, fmt.Errorf("authenticate ciphertext: %w", ErrDecrypt)
	}
	return plain, nil
}

// ParseKey decodes a base64 encryption key (standard or URL alphabet, with
// or without padding, surrounding whitespace ignored) and checks that it is
// KeySize bytes. The error never contains the key.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		key, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("encryption key must decode to %d bytes, got %d (generate one with: openssl rand -base64 32)", KeySize, len(key))
		}
		return key, nil
	}
	return nil, errors.New("encryption key is not valid base64 (generate one with: openssl rand -base64 32)")
}

// LoadOrCreateKeyFile reads a base64 key from path. If the file does not
// exist it creates one holding a new random key: the parent directory is
// created 0700 when missing and the file is written 0600, atomically (a
// concurrent creator's key wins and is returned). created reports whether
// this call wrote the file.
func LoadOrCreateKeyFile(path string) (key []byte, created bool, err error) {
	key, err = LoadKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create key directory: %w", err)
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, false, fmt.Errorf("generate key: %w", err)
	}
	// Write a temporary file, then hard-link it into place: the link fails if
	// the key file appeared meanwhile, and a reader never sees a partial key.
	tmp, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return nil, false, fmt.Errorf("create key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("create key file: %w", err)
	}
	if _, err := tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, false, fmt.Errorf("write key file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			key, err = LoadKeyFile(path)
			return key, false, err
		}
		return nil, false, fmt.Errorf("create key file: %w", err)
	}
	return key, true, nil
}

// KeyFileName is the key file a SQLite deployment without ENCRYPTION_KEY
// keeps beside its database.
const KeyFileName = "encryption.key"

// KeyFileBeside returns the path of the key file of the SQLite database at
// dbPath.
func KeyFileBeside(dbPath string) string {
	return filepath.Join(filepath.Dir(dbPath), KeyFileName)
}

// LoadKeyFile reads a base64 key from path; unlike LoadOrCreateKeyFile it
// never creates one. The error never contains the key.
func LoadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	key, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return key, nil
}

// Mask returns a display form of an API key that reveals at most its first 3
// and last 4 characters, e.g. "sk-...wxyz". Keys shorter than 12 characters,
// where that would reveal more than half of the key, become "***".
func Mask(key string) string {
	r := []rune(key)
	if len(r) < 12 {
		return "***"
	}
	return string(r[:3]) + "..." + string(r[len(r)-4:])
}

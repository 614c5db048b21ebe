package secret

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func newCipher(t *testing.T, key []byte) *Cipher {
	t.Helper()
	c, err := NewCipher(key)
	if err != nil {
		t.Fatalf("NewCipher: %v", err)
	}
	return c
}

func TestNewCipherKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := NewCipher(make([]byte, n)); err == nil {
			t.Errorf("NewCipher(%d bytes): want error", n)
		}
	}
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	c := newCipher(t, newKey(t))
	for _, plain := range [][]byte{{}, []byte("sk-proj-abc"), bytes.Repeat([]byte{0xff}, 4096)} {
		ct, err := c.Encrypt(plain)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		if ct[0] != version1 {
			t.Errorf("version byte = %d, want %d", ct[0], version1)
		}
		if len(plain) > 0 && bytes.Contains(ct, plain) {
			t.Errorf("ciphertext contains the plaintext")
		}
		got, err := c.Decrypt(ct)
		if err != nil {
			t.Fatalf("Decrypt: %v", err)
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("Decrypt = %q, want %q", got, plain)
		}
	}
}

func TestEncryptUsesFreshNonce(t *testing.T) {
	c := newCipher(t, newKey(t))
	a, _ := c.Encrypt([]byte("same"))
	b, _ := c.Encrypt([]byte("same"))
	if bytes.Equal(a, b) {
		t.Fatal("two encryptions of the same plaintext are identical")
	}
}

func TestDecryptRefuses(t *testing.T) {
	key := newKey(t)
	c := newCipher(t, key)
	ct, err := c.Encrypt([]byte("sk-upstream-key-1234"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(ct)
		b[i] ^= 0x01
		return b
	}
	cases := []struct {
		name   string
		cipher *Cipher
		ct     []byte
	}{
		{"wrong key", newCipher(t, newKey(t)), ct},
		{"tampered nonce", c, flip(1)},
		{"tampered body", c, flip(len(ct) / 2)},
		{"tampered tag", c, flip(len(ct) - 1)},
		{"unknown version", c, flip(0)},
		{"truncated", c, ct[:len(ct)-1]},
		{"too short", c, ct[:10]},
		{"empty", c, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cipher.Decrypt(tc.ct)
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("Decrypt error = %v, want ErrDecrypt", err)
			}
			if got != nil {
				t.Errorf("Decrypt returned plaintext %q with an error", got)
			}
			if !strings.Contains(err.Error(), "ENCRYPTION_KEY") {
				t.Errorf("error %q does not point the operator at ENCRYPTION_KEY", err)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	key := newKey(t)
	good := []string{
		base64.StdEncoding.EncodeToString(key),
		base64.RawStdEncoding.EncodeToString(key),
		base64.URLEncoding.EncodeToString(key),
		" " + base64.StdEncoding.EncodeToString(key) + "\n",
	}
	for _, s := range good {
		got, err := ParseKey(s)
		if err != nil {
			t.Errorf("ParseKey(%q): %v", s, err)
			continue
		}
		if !bytes.Equal(got, key) {
			t.Errorf("ParseKey(%q) = %x, want %x", s, got, key)
		}
	}
	bad := []string{"", "not base64!!", base64.StdEncoding.EncodeToString(key[:16]), base64.StdEncoding.EncodeToString(append(key, 1))}
	for _, s := range bad {
		if _, err := ParseKey(s); err == nil {
			t.Errorf("ParseKey(%q): want error", s)
		} else if len(s) > 8 && strings.Contains(err.Error(), s) {
			t.Errorf("ParseKey error %q contains the key", err)
		}
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "keys")
	path := filepath.Join(dir, "encryption.key")

	key, created, err := LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if !created || len(key) != KeySize {
		t.Fatalf("create: created=%v len=%d, want true %d", created, len(key), KeySize)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %o, want 600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm != 0o700 {
		t.Errorf("key dir mode = %o, want 700", perm)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("key dir holds %d entries, want only the key file", len(entries))
	}

	again, created, err := LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if created || !bytes.Equal(again, key) {
		t.Fatalf("reload: created=%v same=%v, want false true", created, bytes.Equal(again, key))
	}
}

func TestLoadOrCreateKeyFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k", "encryption.key")
	const n = 8
	keys := make([][]byte, n)
	createdCount := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, created, err := LoadOrCreateKeyFile(path)
			if err != nil {
				t.Errorf("LoadOrCreateKeyFile: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			keys[i] = k
			if created {
				createdCount++
			}
		})
	}
	wg.Wait()
	if createdCount != 1 {
		t.Errorf("%d callers created the file, want 1", createdCount)
	}
	for i := range keys {
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("caller %d got a different key", i)
		}
	}
}

func TestLoadKeyFileInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "encryption.key")
	if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, created, err := LoadOrCreateKeyFile(path); err == nil || created {
		t.Fatalf("invalid key file: created=%v err=%v, want an error and no rewrite", created, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "short\n" {
		t.Errorf("invalid key file was overwritten")
	}
}

func TestMask(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "***"},
		{"abc", "***"},
		{"sk-1234567", "***"},
		{"sk-12345678", "***"},
		{"sk-123456789", "sk-...6789"},
		{"sk-proj-abcdefghijklmnopwxyz", "sk-...wxyz"},
		{"ключ-секретный-абвгд", "клю...бвгд"},
	}
	for _, tc := range cases {
		if got := Mask(tc.in); got != tc.want {
			t.Errorf("Mask(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

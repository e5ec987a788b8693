package vmfuse.nbd;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

import org.bouncycastle.tls.CipherSuite;
import org.bouncycastle.tls.PSKTlsServer;
import org.bouncycastle.tls.TlsPSKIdentityManager;
import org.bouncycastle.tls.TlsUtils;
import org.bouncycastle.tls.crypto.impl.bc.BcTlsCrypto;

/**
 * TLS with pre-shared keys, required on TCP: the keys of a file in the format QEMU's
 * tls-creds-psk ("keys.psk"), nbdkit's --tls-psk and libnbd's tls-psk-file read, one
 * {@code IDENTITY:HEXKEY} per line. An identity is a tenant: what a client may see is decided by
 * the identity it proved it holds the key of (BouncyCastle's TLS API: TLS 1.2, ECDHE-PSK suites
 * only, its own crypto, no JCE provider).
 */
public final class TlsPsk {
    private static final SecureRandom RANDOM = new SecureRandom();
    private final Path file;
    private final Map<String, byte[]> keys;

    private TlsPsk(Path file, Map<String, byte[]> keys) {
        this.file = file;
        this.keys = keys;
    }

    /**
     * The keys of {@code file}; IOException naming the line if one is not IDENTITY:HEXKEY (a key
     * of at least 16 bytes), or if anyone but its owner may read it.
     */
    public static TlsPsk load(Path file) throws IOException {
        Set<PosixFilePermission> mode = Files.getPosixFilePermissions(file);
        if (mode.contains(PosixFilePermission.GROUP_READ) || mode.contains(PosixFilePermission.OTHERS_READ)) {
            throw new IOException(file + " may be read by others than its owner: chmod 600 it");
        }
        Map<String, byte[]> keys = new TreeMap<>();
        int n = 0;
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            n++;
            if (line.isBlank() || line.startsWith("#")) {
                continue;
            }
            int colon = line.lastIndexOf(':');
            if (colon <= 0) {
                throw new IOException(file + " line " + n + ": not IDENTITY:HEXKEY");
            }
            byte[] key;
            try {
                key = HexFormat.of().parseHex(line.substring(colon + 1).trim());
            } catch (IllegalArgumentException e) {
                throw new IOException(file + " line " + n + ": the key is not hexadecimal");
            }
            if (key.length < 16) {
                throw new IOException(file + " line " + n + ": a key of " + key.length + " bytes; at least 16");
            }
            if (keys.put(line.substring(0, colon), key) != null) {
                throw new IOException(file + " line " + n + ": identity " + line.substring(0, colon) + " twice");
            }
        }
        if (keys.isEmpty()) {
            throw new IOException(file + " holds no key");
        }
        return new TlsPsk(file, keys);
    }

    public Path file() {
        return file;
    }

    public Set<String> identities() {
        return keys.keySet();
    }

    /** The server side of one connection's handshake; {@code identity[0]} is set to the identity the client used. */
    PSKTlsServer server(String[] identity) {
        return new PSKTlsServer(new BcTlsCrypto(RANDOM), new TlsPSKIdentityManager() {
            @Override
            public byte[] getHint() {
                return null;
            }

            @Override
            public byte[] getPSK(byte[] id) {
                String name = new String(id, StandardCharsets.UTF_8);
                byte[] key = keys.get(name);
                if (key != null) {
                    identity[0] = name;
                    return key.clone();
                }
                return null;
            }
        }) {
            /**
             * ECDHE-PSK only: forward secrecy, and no finite-field Diffie-Hellman of a size an
             * unauthenticated client could make the server compute.
             */
            @Override
            protected int[] getSupportedCipherSuites() {
                return TlsUtils.getSupportedCipherSuites(getCrypto(), new int[] {
                    CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
                    CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256,
                    CipherSuite.TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384,
                    CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
                    CipherSuite.TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA384});
            }
        };
    }
}

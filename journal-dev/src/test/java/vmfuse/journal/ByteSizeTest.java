package vmfuse.journal;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

class ByteSizeTest {

    @ParameterizedTest
    @CsvSource({"4096, 4096", "64K, 65536", "64k, 65536", "128M, 134217728", "128MiB, 134217728", "1G, 1073741824",
        "1GB, 1073741824", "2T, 2199023255552", "7E, 8070450532247928832", "0, 0"})
    void parsesBinaryUnits(String in, long bytes) throws Exception {
        assertEquals(bytes, ByteSize.parse(in));
    }

    @ParameterizedTest
    @ValueSource(strings = {"", "M", "-1", "1.5G", "12X", "G1", "1 G B", "99999999999999999999"})
    void refusesWhatIsNotASize(String in) {
        assertThrows(StoreException.class, () -> ByteSize.parse(in));
    }

    @ParameterizedTest
    @ValueSource(strings = {"8E", "9223372036854775808", "16384P"})
    void refusesSizesPastTwoToTheSixtyThree(String in) {
        assertEquals(StoreException.EFBIG, assertThrows(StoreException.class, () -> ByteSize.parse(in)).errno());
    }
}

package vmfuse.fs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class TsvFieldTest {

    @ParameterizedTest
    @ValueSource(strings = {"vm1.qcow2", "a\tb.raw", "c\nd", "e\r\n", "back\\slash", "\\t literally", "tail\\",
        "\\\\\t\\n", "ünï çødé"})
    void everyNameComesBackAndItsFieldSplitsNothing(String name) {
        String field = TsvField.escape(name);
        assertFalse(field.contains("\t") || field.contains("\n") || field.contains("\r"), field);
        assertEquals(name, TsvField.unescape(field));
    }

    @ParameterizedTest
    @ValueSource(strings = {"a\tb.raw", "c\nd", "e\r"})
    void aTabNewlineOrCarriageReturnSplits(String name) {
        assertTrue(TsvField.splits(name));
        assertFalse(TsvField.splits(TsvField.escape(name)));
    }

    @ParameterizedTest
    @ValueSource(strings = {"plain.raw", "x"})
    void aPlainNameIsItsOwnField(String name) {
        assertSame(name, TsvField.escape(name));
        assertSame(name, TsvField.unescape(name));
        assertFalse(TsvField.splits(name));
    }

    @ParameterizedTest
    @ValueSource(strings = {"a\\xb", "c\\", "\\q"})
    void aBackslashBeforeAnyOtherCharacterStays(String field) {
        assertEquals(field, TsvField.unescape(field));
    }
}

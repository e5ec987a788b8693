package vmfuse.fs.it;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;

/** Tests that share one fresh mount, made before the first and unmounted after the last. */
@Tag("integration")
abstract class OnOneMount {
    static Mounted m;

    @BeforeAll
    static void mount() throws Exception {
        m = Mounted.create();
    }

    @AfterAll
    static void unmount() throws Exception {
        m.close();
    }
}

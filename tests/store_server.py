"What the kill test's forkserver preloads: lisette, and the first calls made once (see `store_child.warm`)"
import store_child
store_child.warm()

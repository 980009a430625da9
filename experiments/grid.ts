/**
 * Sweep grids.
 *
 * @module
 */

/** One point of a grid over `axes`: each key takes one value of its axis. */
export type GridPoint<A extends Record<string, readonly unknown[]>> = {
  [K in keyof A]: A[K][number];
};

/**
 * The cartesian product of the axes, in a stable order: the first key is the outermost loop,
 * the last key varies fastest. `expandGrid({a: [1, 2], b: ["x", "y"]})` gives
 * `[{a: 1, b: "x"}, {a: 1, b: "y"}, {a: 2, b: "x"}, {a: 2, b: "y"}]`. An empty axis gives no
 * points; no axes give one empty point.
 *
 * @param axes key → list of values
 * @returns the points, each a new object with the keys in the order of `axes`
 */
export function expandGrid<const A extends Record<string, readonly unknown[]>>(
  axes: A,
): GridPoint<A>[] {
  const keys = Object.keys(axes);
  for (const key of keys) {
    if (!Array.isArray(axes[key])) {
      throw new TypeError(`expandGrid: axis "${key}" must be an array`);
    }
  }
  let points: Record<string, unknown>[] = [{}];
  for (const key of keys) {
    points = points.flatMap((p) => axes[key].map((v) => ({ ...p, [key]: v })));
  }
  return points as GridPoint<A>[];
}

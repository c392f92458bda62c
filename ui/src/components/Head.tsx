/** A table's header row; a column named with `num` is right-aligned, as its numbers are. */
export function Head({ columns }: { columns: (string | [string, "num"])[] }) {
  return (
    <thead>
      <tr>
        {columns.map((column, i) =>
          typeof column === "string" ? <th key={i}>{column}</th> : <th key={i} className="num">{column[0]}</th>,
        )}
      </tr>
    </thead>
  );
}

import { describe, expect, it } from "vitest";
import { add, compare, decimalsOf, format, isDecimal, isMultiple, mul, parse, sub } from "./decimal";

describe("decimal strings", () => {
  it("parses digits with an optional point and nothing else", () => {
    expect(parse("65000.10")).toEqual({ units: 6500010n, scale: 2 });
    expect(parse("-0.5")).toEqual({ units: -5n, scale: 1 });
    for (const bad of ["", "1e5", "1.", ".5", "1,5", "0x10", "NaN", "1.2.3"]) expect(parse(bad)).toBeNull();
    expect(isDecimal("-1")).toBe(false);
  });

  it("adds, subtracts and multiplies exactly where floating point does not", () => {
    expect(add("0.1", "0.2")).toBe("0.3");
    expect(sub("0.3", "0.1")).toBe("0.2");
    expect(mul("65000.01", "0.00003")).toBe("1.9500003");
    expect(add("99999999999999999.99", "0.01")).toBe("100000000000000000");
    expect(sub("1", "1.5")).toBe("-0.5");
  });

  it("compares by value whatever the scale", () => {
    expect(compare("100.50", "100.5")).toBe(0);
    expect(compare("100.49", "100.5")).toBe(-1);
    expect(compare("9", "10")).toBe(-1);
  });

  it("knows multiples of a step", () => {
    expect(isMultiple("65000.10", "0.01")).toBe(true);
    expect(isMultiple("65000.105", "0.01")).toBe(false);
    expect(isMultiple("0.00003", "0.00001")).toBe(true);
    expect(isMultiple("1", "0")).toBe(false);
  });

  it("formats with the step's decimals, grouped, never rounding up", () => {
    expect(decimalsOf("0.01")).toBe(2);
    expect(decimalsOf("0.010")).toBe(2);
    expect(decimalsOf("1")).toBe(0);
    expect(format("65000.1", 2)).toBe("65\u2009000.10");
    expect(format("0.999999", 2)).toBe("0.99");
    expect(format("1234567")).toBe("1\u2009234\u2009567");
    expect(format("-1234.5")).toBe("-1\u2009234.5");
    expect(format("12", 0)).toBe("12");
    expect(format("not a number")).toBe("not a number");
  });
});

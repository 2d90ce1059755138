"""Answer forms of issue 12, each with equal and not-equal cases: (pred, gold, expected).

Written for this project (not copied from any other project's tests). `pred` is an answer
string as extracted from a response, possibly still wrapped in math delimiters or a box.
"""

DELIMITED = [
    ("$\\frac{1}{2}$", "0.5", True),
    ("\\(\\frac{1}{2}\\)", "\\frac12", True),
    ("\\[ 42 \\]", "42", True),
    ("$$7$$", "7", True),
    ("$\\boxed{9}$", "9", True),
    ("\\[ 41 \\]", "42", False),
    ("$\\boxed{8}$", "9", False),
]
RELATIONS = [
    ("x \\ge 3", "x \\geq 3", True),
    ("x >= 3", "x \\ge 3", True),
    ("x \\geqslant 3", "x\\ge3", True),
    ("x \u2265 3", "x \\ge 3", True),
    ("3 \\le x", "x \\ge 3", True),
    ("4 \\ge y", "y \\le 4", True),
    ("-y < -2", "y > 2", True),
    ("y \\gt 2", "y > 2", True),
    ("y \\lt 2", "y<2", True),
    ("2x > 6", "x > 3", True),
    ("-2x > 6", "x < -3", True),
    ("x \\neq 1", "x \\ne 1", True),
    ("x != 1", "x \\neq 1", True),
    ("x \u2260 1", "x\\ne1", True),
    ("x + y \\le 3", "3 \\ge y + x", True),
    ("x > 3", "x \\ge 3", False),
    ("x < 3", "x > 3", False),
    ("-y < -2", "y < 2", False),
    ("-2x > 6", "x > -3", False),
    ("x \\ge 3", "3", False),
    ("t > 3", "x > 3", False),
    ("x + y \\le 3", "x + y \\ge 3", False),
    ("x \\ne 1", "x \\ne 2", False),
    ("0 < g(t) < 4", "(0, 4)", True),  # a function value as the unknown
    ("h(x) \\ge -1", "[-1, \\infty)", True),
    ("0 < g(t) < 4", "[0, 4]", False),
    ("0 < g(t) < 4", "0 < t < 4", False),
    ("2 \\le |w| \\le 5", "w \\in [-5, -2] \\cup [2, 5]", True),  # an absolute value: both signs
    ("|w| < 3", "-3 < w < 3", True),
    ("|w| > 1", "(-\\infty, -1) \\cup (1, \\infty)", True),
    ("2 \\le |w| \\le 5", "[2, 5]", False),
    ("|w| < 3", "[-3, 3]", False),
]
CHAINS = [
    ("0 \\le t \\le 3", "t \\in [0,3]", True),
    ("0 \\le t \\le 3", "[0, 3]", True),
    ("3 \\ge t \\ge 0", "[0,3]", True),
    ("t \\in [0,3]", "[0,3]", True),
    ("x > 2", "(2, \\infty)", True),
    ("x<-1 \\text{ or } x>1", "(-\\infty,-1)\\cup(1,\\infty)", True),
    ("x \\le -1 or x \\ge 1", "(-\\infty,-1]\\cup[1,\\infty)", True),
    ("x > 1, x < 3", "(1,3)", True),
    ("x \\in \\mathbb{R}", "(-\\infty, \\infty)", True),
    ("0 < t \\le 3", "[0,3]", False),
    ("x \\ge 2", "(2,\\infty)", False),
    ("x<-1 \\text{ or } x>1", "(-1,1)", False),
    ("-1 < x < 1", "(-\\infty,-1)\\cup(1,\\infty)", False),
]
APPROX = [
    ("\\approx 3.14", "3.14", True),
    ("x \\approx 2.5", "2.5", True),
    ("\\frac{1}{3} \\approx 0.33", "\\frac13", True),
    ("\\sqrt{2} \\approx 1.414", "\\sqrt2", True),
    ("\\frac{\\sqrt{3}}{2} \\approx 0.866", "\\frac{\\sqrt3}{2}", True),
    ("\\frac{1}{3} \\approx 0.33", "0.33", False),
    ("2\\sqrt{2} \\approx 2.83", "2.83", False),
    ("x \\approx 2.5", "2.4", False),
]
EQUATION_CHAINS = [
    ("y = 2+3 = 5", "5", True),
    ("y=2+3=5", "y=5", True),
    ("2 \\cdot 3 = 6", "6", True),
    ("A = \\pi r^2 = 4\\pi", "4\\pi", True),
    ("y = 2+3 = 6", "5", False),
    ("y=2+3=5", "y=6", False),
    # a computation without unknowns before a number: the number is the answer
    ("\\binom{5}{2} = 10", "10", True),
    ("17 \\bmod 5 = 2", "2", True),
    ("\\begin{vmatrix} 2 & 1 \\\\ 1 & 2 \\end{vmatrix} = 3", "3", True),
    ("\\frac{1}{2} \\$ = \\frac{10}{9}", "10/9", True),
    ("\\frac{1}{2} = \\frac{10}{9}", "\\frac{1}{2}", False),
    ("17 \\bmod 5 = 2", "17", False),
    ("\\binom{n}{2} = 10", "10", False),
    ("2+3 = 6", "5", False),
]
SETS = [
    ("\\{1, 2\\}", "1, 2", True),
    ("\\{1; 2\\}", "\\{1,2\\}", True),
    ("1; 2", "2, 1", True),
    ("{1, 2}", "\\{2, 1\\}", True),
    ("\\{5\\}", "5", True),
    ("x = 1 \\text{ or } x = 2", "1, 2", True),
    ("x=1 or x=2", "2,1", True),
    ("x = 1, x = 2", "1, 2", True),
    ("\\{x \\mid x > 2\\}", "(2, \\infty)", True),
    ("\\{x : x > 2\\}", "x>2", True),
    ("\\{x \\in \\mathbb{R} \\mid x \\ge 0\\}", "[0,\\infty)", True),
    ("(1,2) \\cup (3,4)", "(3,4)\\cup(1,2)", True),
    ("[1,2] \\cup [2,3]", "[1,3]", True),
    ("\\{1, 2\\}", "1, 2, 3", False),
    ("x = 1 \\text{ or } x = 3", "1, 2", False),
    ("\\{x \\mid x > 2\\}", "[2, \\infty)", False),
    ("(1,2) \\cup (3,4)", "(1,2)\\cup(3,5)", False),
    ("\\{1,2\\}", "(1,2)", False),
]
# A solution set written with an element twice is the same set (both sides keep two or more elements).
DUPLICATES = [
    ("(2, 5), (4, 1), (2,5)", "(4,1), (2,5)", True),
    ("\\{-3, 7, -3\\}", "\\{7, -3\\}", True),
    ("x = 2, x = 6, x = 2", "2, 6", True),
    ("(2, 5), (4, 1), (2,5)", "(4,1), (2,6)", False),
    ("4, 4", "4", False),
    ("\\{-3, 7, -3\\}", "\\{7, -3, 1\\}", False),
]
PLUS_MINUS = [
    ("\\pm 2", "2, -2", True),
    ("x = \\pm 2", "-2, 2", True),
    ("1 \\pm \\sqrt{2}", "1+\\sqrt2, 1-\\sqrt2", True),
    ("\\frac{-1 \\pm \\sqrt{5}}{2}", "\\frac{-1+\\sqrt5}{2}, \\frac{-1-\\sqrt5}{2}", True),
    ("\\{-2, 1\\pm\\sqrt{5}\\}", "\\{1+\\sqrt{5}, 1-\\sqrt{5}, -2\\}", True),
    ("\\{1\\}, \\{2\\}", "\\{2\\}, \\{1\\}", True),
    ("\\pm 2", "2", False),
    ("\\{-2, 1\\pm\\sqrt{5}\\}", "\\{1+\\sqrt{5}, -2\\}", False),
    ("1 \\pm \\sqrt{2}", "1+\\sqrt2, 1-\\sqrt3", False),
]
EQUATION_VALUES = [
    ("(3,2)", "(p,q)=(3,2)", True),
    ("4, 5", "AB=4, CD=5", True),
    ("\\frac{1}{\\sqrt{6}}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}", True),
    ("1", "|AB|=1", True),
    ("11a+c", "7 = 11a+c", False),  # an equation is not the value of one of its sides
    ("0", "a + 3z = 0", False),
    ("1", "2x + z = 1", False),
    ("(2,3)", "(p,q)=(3,2)", False),
    ("-x=5", "x=5", False),
]
ASSIGNMENTS = [
    ("a = 3, b = 4", "a=3, b=4", True),
    ("b=4, a=3", "a=3,b=4", True),
    ("(1,2), (3,4)", "(3,4), (1,2)", True),
    ("(0;1;2), (3;4;5)", "(3,4,5), (0,1,2)", True),
    ("(11,7)or(7,11)", "(7,11), (11,7)", True),
    ("a = 4, b = 3", "a=3, b=4", False),
    ("a=3", "a=3, b=4", False),
    ("(1,2), (3,4)", "(1,2)", False),
    ("(2,1), (3,4)", "(1,2),(3,4)", False),
    ("(0;1;2)", "(0,2,1)", False),
    ("1, 2", "1, 2, 3", False),
    ("m = 4, n = 9", "(4, 9)", True),  # values in the order written form the tuple
    ("m=4,n=9; m=1,n=0", "(1,0), (4,9)", True),
    ("(4, 9)", "m = 4, n = 9", True),
    ("m = 4, n = 9", "(9, 4)", False),
    ("m=4,n=9; m=1,n=0", "(1,0), (4,8)", False),
    ("m = 4, m = 9", "(4, 9)", False),  # two values of one unknown are a solution list
]
MATRICES = [
    ("\\left[\\begin{array}{cc}1 & 2\\\\3 & 4\\end{array}\\right]", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{bmatrix}\\frac{1}{2} & 0\\\\ 0 & \\dfrac{3}{4}\\end{bmatrix}", "\\begin{pmatrix}0.5&0\\\\0&0.75\\end{pmatrix}", True),
    ("\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\end{pmatrix}", "\\begin{pmatrix}-1/3\\\\2/3\\end{pmatrix}", True),
    ("\\left[\\begin{array}{c}1\\\\2\\end{array}\\right]", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    ("\\left[\\begin{array}{cc}1 & 2\\\\3 & 5\\end{array}\\right]", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", False),
    ("\\begin{bmatrix}\\frac{1}{2} & 0\\end{bmatrix}", "\\begin{pmatrix}0.5\\\\0\\end{pmatrix}", False),
]
# A sum, difference or product of written matrices is compared by its value.
MATRIX_ARITHMETIC = [
    ("\\begin{pmatrix}2 & 0\\\\ 1 & 3\\end{pmatrix} + \\begin{pmatrix}1 & 1\\\\ 0 & -3\\end{pmatrix}",
     "\\begin{pmatrix}3 & 1\\\\ 1 & 0\\end{pmatrix}", True),
    ("\\begin{bmatrix}1 & 2\\end{bmatrix} \\begin{bmatrix}3\\\\ 4\\end{bmatrix}", "\\begin{pmatrix}11\\end{pmatrix}", True),
    ("\\begin{pmatrix}0 & 1\\\\ 1 & 0\\end{pmatrix} \\cdot \\begin{pmatrix}a \\\\ b\\end{pmatrix}",
     "\\begin{pmatrix}b\\\\a\\end{pmatrix}", True),
    ("\\begin{pmatrix}5 & 5\\end{pmatrix} - \\begin{pmatrix}\\frac{1}{2} & 2\\end{pmatrix}",
     "\\begin{pmatrix}4.5 & 3\\end{pmatrix}", True),
    ("\\begin{pmatrix}2 & 0\\\\ 1 & 3\\end{pmatrix} + \\begin{pmatrix}1 & 1\\\\ 0 & -3\\end{pmatrix}",
     "\\begin{pmatrix}3 & 1\\\\ 1 & 6\\end{pmatrix}", False),
    ("\\begin{pmatrix}0 & 1\\\\ 1 & 0\\end{pmatrix} \\cdot \\begin{pmatrix}a \\\\ b\\end{pmatrix}",
     "\\begin{pmatrix}a\\\\b\\end{pmatrix}", False),
    ("\\begin{pmatrix}1 & 2\\end{pmatrix} + \\begin{pmatrix}3\\\\ 4\\end{pmatrix}", "\\begin{pmatrix}4 & 6\\end{pmatrix}", False),
]
PRECISION = [
    ("0.028672", "\\frac{448}{15625}", True),
    ("0.0286720", "\\frac{448}{15625}", True),
    ("0.0287", "\\frac{448}{15625}", False),  # three significant digits are not the value (as 0.67 is not 2/3)
    ("\\frac{448}{15626}", "\\frac{448}{15625}", False),  # exact values compare exactly
    ("\\frac{20001}{\\pi}", "\\frac{20000}{\\pi}", False),
    (".35626", ".35625", False),
    ("6366.2", "\\frac{20000}{\\pi}", True),
    ("6366", "\\frac{20000}{\\pi}", False),
    ("0.0666668", "0.066666793", True),  # the prediction rounds the gold to the digits it writes
    ("0.50001", "0.5", False),  # more digits than the gold: they must be right
    ("0.067", "0.066793", False),
]
NUMBERS = [
    ("2,500.25", "2500.25", True),
    ("12{,}345", "12345", True),
    ("\\$1,234", "1234", True),
    ("\u20ac50", "50", True),
    ("\u00a33.50", "3.5", True),
    ("5\\textnormal{ cm}", "5", True),
    ("10 \\text{ m}^2", "10", True),
    ("36\\,\\mathrm{cm}^{2}", "36", True),
    ("15\\text{ ft}^3", "15", True),
    ("50 percent", "50\\%", True),
    ("50 percent", "0.5", True),
    ("50 pct", "50", True),
    ("3\\frac{1}{4}", "3.25", True),
    ("3\\frac{1}{4}", "\\frac{13}{4}", True),
    ("-2\\frac{1}{2}", "-2.5", True),
    ("5\\", "5", True),
    ("5\\!", "5", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("\\tfrac{1}{8}", "0.125", True),
    ("2*sqrt(2)", "2\\sqrt{2}", True),
    ("3pi", "3\\pi", True),
    ("2**10", "1024", True),
    ("204_{5}", "204_5", True),
    ("2*sqrt(3)", "2\\sqrt{2}", False),
    ("204_{6}", "204_5", False),
    ("11,\\! 111,\\! 100", "11111100", True),
    ("14 {, }916", "14916", True),
    ("28 percentage", "28\\%", True),
    ("-2 \\\\le x \\\\le 7", "[-2, 7]", True),  # a doubled backslash before a command
    ("12, 345", "12345", False),
    ("3\\frac{1}{4}", "3.75", False),
    ("2,500.25", "2,600.25", False),
    ("\\$1,234", "1243", False),
    ("50 percent", "5", False),
    ("11,\\! 111,\\! 100", "11111101", False),
    ("5\\textnormal{ cm}", "6", False),
]
# A comma between digits that is not a thousands separator is a decimal comma (`3,75` is 3.75)
# when the other side is one number; against a list it stays a list (`4,5` is the list 4, 5).
DECIMAL_COMMA = [
    ("3,75", "3.75", True),
    ("2500,5", "2500.5", True),
    ("0,625", "\\frac{5}{8}", True),
    ("-7,25", "-7.25", True),
    ("4,5", "4, 5", True),
    ("4,5", "\\{5, 4\\}", True),
    ("3,75", "375", False),
    ("3,75", "3.76", False),
    ("0,625", "625", False),
    ("4, 5", "4.5", False),
    ("2500,5", "25005", False),
]

# \sum / \prod: closed forms compare by value; a sum over a sequence (a_{n-k}) by its structure.
SUMS = [
    ("\\sum_{k=1}^{10} k", "55", True),
    ("\\sum_{j=1}^{m} j", "\\frac{m(m+1)}{2}", True),
    ("\\sum_{k=1}^{n} \\frac{1}{k(k+1)}", "1 - \\frac{1}{n+1}", True),
    ("\\prod_{i=1}^{4} i", "24", True),
    ("G_m = \\sum_{i=0}^{m-1} G_{m-i-1} G_i", "G_m = \\sum_{i=0}^{m-1} G_i G_{m-i-1}", True),
    ("\\sum_{k=1}^{10} k", "56", False),
    ("\\sum_{j=1}^{m} j", "\\frac{m(m-1)}{2}", False),
    ("G_m = \\sum_{i=0}^{m-2} G_i G_{m-i-2}", "G_m = \\sum_{i=0}^{m-1} G_i G_{m-i-1}", False),
    ("\\sum_{i=0}^{m-1} G_i", "mG_i", False),  # a sequence is not a constant
    ("\\sum_{k=1}^{10^{9}} k", "500000000500000000", False),  # too many terms to sum: refused, not computed
]

ALL_FORMS = {
    "delimited": DELIMITED, "relations": RELATIONS, "chains": CHAINS, "approx": APPROX,
    "equation_chains": EQUATION_CHAINS, "equation_values": EQUATION_VALUES, "sets": SETS, "plus_minus": PLUS_MINUS, "assignments": ASSIGNMENTS,
    "matrices": MATRICES, "precision": PRECISION, "numbers": NUMBERS, "decimal_comma": DECIMAL_COMMA,
    "duplicates": DUPLICATES, "matrix_arithmetic": MATRIX_ARITHMETIC, "sums": SUMS,
}
FORM_CASES = [case for cases in ALL_FORMS.values() for case in cases]

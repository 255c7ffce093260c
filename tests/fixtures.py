"""Tiny raw-data fixtures in the original formats, written by the tests themselves.

No licensed data is shipped: every file here is made up, line by line.
"""

from __future__ import annotations

from pathlib import Path

ML_MOVIES = ["1::Toy Story (1995)::Animation|Comedy", "2::Heat (1995)::Action|Crime", "3::Amélie (2001)::Comedy"]
ML_EXTRA = [
    "1::Toy Story::1995::G::x::Animation, Comedy::John Lasseter::w::Tom Hanks, Tim Allen::p::u",
    "2::Heat::1995::R::x::Action, Crime::Michael Mann::w::Al Pacino, Robert De Niro::p::u",
]


def write_lines(path: Path, lines: list[str], encoding: str = "latin-1", newline: str = "\n") -> Path:
    """Write `lines` to `path` with a final newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode(encoding))
    return path


def movielens_dir(root: Path, users: list[str], ratings: list[str], movies: list[str] = ML_MOVIES,
                  extra: list[str] | None = ML_EXTRA) -> Path:
    """An ML-1M style directory (users.dat, movies.dat, ratings.dat, movies_extrainfos.dat)."""
    directory = root / "ml-1m"
    write_lines(directory / "users.dat", users)
    write_lines(directory / "movies.dat", movies)
    write_lines(directory / "ratings.dat", ratings)
    if extra is not None:
        write_lines(directory / "movies_extrainfos.dat", extra, encoding="utf-8", newline="\r\n")
    return root


def quoted(*fields: str | None) -> str:
    """A Book-Crossing CSV record: every field quoted, NULL unquoted, ';' separated."""
    return ";".join("NULL" if f is None else '"' + f.replace('"', '\\"') + '"' for f in fields)


def bookcrossing_dir(root: Path, users: list[str], ratings: list[str], books: list[str] | None = None) -> Path:
    """A Book-Crossing directory in the original CSV dump format (CRLF, ISO-8859-1)."""
    directory = root / "bookcrossing"
    write_lines(directory / "BX-Users.csv", [quoted("User-ID", "Location", "Age"), *users], newline="\r\n")
    header = quoted("ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher",
                    "Image-URL-S", "Image-URL-M", "Image-URL-L")
    books = books if books is not None else [
        quoted("0001", "A Book", "Ann Author", "1999", "Pub House", "", "", ""),
        quoted("0002", "B Book", "Bob Writer", "0", "Other Pub", "", "", ""),
        quoted("0003", "C Book", "Ann Author", "2001", "Pub House", "", "", ""),
    ]
    write_lines(directory / "BX-Books.csv", [header, *books], newline="\r\n")
    write_lines(directory / "BX-Book-Ratings.csv", [quoted("User-ID", "ISBN", "Book-Rating"), *ratings], newline="\r\n")
    return root


def good_ml_users(n: int, start: int = 1) -> list[str]:
    """`n` valid ML users with a spread of genders, age codes, occupations and zips."""
    ages = (1, 18, 25, 35, 45, 50, 56)
    return [f"{u}::{'MF'[u % 2]}::{ages[u % 7]}::{u % 21}::{10000 + (u % 5)}" for u in range(start, start + n)]


def ml_ratings_for(user_ids: range, items: tuple[int, ...] = (1, 2, 3)) -> list[str]:
    """Each user rates every item in `items` (rating varies with user and item)."""
    return [f"{u}::{i}::{1 + (u + i) % 5}::{978300000 + u * 10 + i}" for u in user_ids for i in items]


def bx_location(u: int) -> str:
    """A valid 'city, state, country' that varies with the user."""
    return ("austin, texas, usa", "köln, nrw, germany", "porto, porto, portugal", "lyon, rhone, france")[u % 4]


def tiny_real_data(root: Path, n_users: int = 40) -> Path:
    """Made-up ML-1M and Book-Crossing directories under `root` that the whole data chain accepts."""
    ml_ratings = []
    for user in range(1, n_users + 1):
        ml_ratings += ml_ratings_for(range(user, user + 1), (1, 2, 3) if user % 3 else (1, 2))
    movielens_dir(root, good_ml_users(n_users), ml_ratings)
    books = [quoted(f"000{i}", f"Book {i}", f"Author {i % 3}", str(1990 + i), f"Pub {i % 2}", "", "", "") for i in range(1, 7)]
    users = [quoted(str(u), bx_location(u), str(20 + u % 40)) for u in range(1, n_users + 1)]
    ratings = [quoted(str(u), f"000{i}", str(1 + (u + i) % 10)) for u in range(1, n_users + 1) for i in range(1, 3 + u % 3)]
    bookcrossing_dir(root, users, ratings, books)
    return root

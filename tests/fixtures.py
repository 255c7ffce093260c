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


ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
                 "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
ML100K_SPEC = """\
name = "ml100k"

[label]
kind = "rating"
min = 1
max = 5

[interactions]
file = "u.data"
separator = "\\t"
header = false
quote = ""
columns = ["user", "movie", "rating", "time"]
user_id = "user"
item_id = "movie"
label = "rating"
timestamp = "time"
timestamp_min = "1997-09-01"
timestamp_max = "1998-05-01"

[users]
file = "u.user"
separator = "|"
header = false
quote = ""
columns = ["user", "age", "gender", "occupation", "zip"]
id = "user"
id_digits = true

[users.features]
age = { type = "numeric", min = 7, max = 73, bins = [18, 25, 35, 45, 50, 56] }
gender = { type = "categorical", values = ["F", "M"] }
occupation = { type = "categorical", missing = [""] }  # 'none' is an occupation in ML-100K
zip = { type = "categorical", backoff = [3, 1] }

[items]
file = "u.item"
separator = "|"
encoding = "latin-1"
header = false
quote = ""
columns = ["movie", "title", "released", "video_released", "imdb_url", GENRES]
id = "movie"
display = ["title", "released"]

[items.features]
genre = { type = "flags", columns = [GENRES] }
release = { type = "categorical", column = "released" }

[groups]
features = ["age", "gender", "occupation", "zip"]
"""
ML100K_OCCUPATIONS = ("student", "engineer", "none", "writer", "programmer", "other")


def ml100k_dir(root: Path, n_users: int = 40, n_items: int = 30, seed: int = 0,
               users: list[str] | None = None, ratings: list[str] | None = None) -> Path:
    """A MovieLens-100K style directory as shipped (u.data tab separated; u.user, u.item '|'
    separated, ISO-8859-1, u.item with its 19 genre flag columns) and a dataset.toml describing it.

    Each user rates 4 + (u % 9) items; ratings follow a per-user taste so methods have signal.
    """
    import random

    rng = random.Random(seed)
    directory = root / "ml100k"
    genres = ", ".join(f'"{g}"' for g in ML100K_GENRES)
    (directory).mkdir(parents=True, exist_ok=True)
    (directory / "dataset.toml").write_text(ML100K_SPEC.replace("GENRES", genres), encoding="utf-8")
    if users is None:
        users = [f"{u}|{15 + (u * 7) % 50}|{'MF'[u % 2]}|{ML100K_OCCUPATIONS[u % 6]}|{55100 + (u % 4) * 11}"
                 for u in range(1, n_users + 1)]
    items = []
    for i in range(1, n_items + 1):
        flags = ["1" if (i + g) % 7 == 0 or g == 1 + i % 18 else "0" for g in range(19)]
        items.append(f"{i}|Café Film {i} (199{i % 8})|01-Jan-199{i % 8}||http://us.imdb.com/M/title-exact?{i}|" + "|".join(flags))
    if ratings is None:
        ratings = []
        for u in range(1, n_users + 1):
            for i in rng.sample(range(1, n_items + 1), min(n_items, 4 + u % 9)):
                taste = 1 + ((u % 3) + (i % 5)) % 5
                ratings.append(f"{u}\t{i}\t{max(1, min(5, taste + rng.choice((-1, 0, 0, 1))))}\t{875000000 + 997 * u + i}")
    write_lines(directory / "u.user", users)
    write_lines(directory / "u.item", items)
    write_lines(directory / "u.data", ratings)
    return directory


CLICKS_SPEC = """\
name: shop_clicks
label: {kind: click}
interactions:
  file: clicks.csv
  user_id: customer
  item_id: product
  label: clicked
  timestamp: ts
users:
  file: customers.csv
  id: customer
  features:
    age: {type: numeric, min: 16, max: 90, bins: [25, 40, 60]}
    region: {type: categorical}
    segment: {type: categorical, values: [new, regular, vip]}
    device: {type: categorical}
items:
  features:
    category: {type: categorical}
    tags: {type: multi, delimiter: ";"}
  display: [category]
groups:
  features: [age, region, segment, device]
"""


def clicks_dir(root: Path, n_users: int = 40, n_items: int = 24, seed: int = 0,
               customers: list[str] | None = None, clicks: list[str] | None = None) -> Path:
    """A click log (clicks.csv: customer, product, category, tags, clicked, ts; quoted CSV with a
    header) with a user table (customers.csv) and a dataset.yaml; item features are log columns."""
    import random

    rng = random.Random(seed)
    directory = root / "shop"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dataset.yaml").write_text(CLICKS_SPEC, encoding="utf-8")
    if customers is None:
        customers = ["customer,age,region,segment,device"] + [
            f"c{u},{18 + (u * 5) % 60},\"{['North, East', 'South', 'West'][u % 3]}\",{['new', 'regular', 'vip'][u % 3]},"
            f"{['ios', 'android'][u % 2]}" for u in range(1, n_users + 1)]
    if clicks is None:
        clicks = ["customer,product,category,tags,clicked,ts"]
        for u in range(1, n_users + 1):
            for i in rng.sample(range(1, n_items + 1), min(n_items, 6 + u % 7)):
                liked = (u + i) % 2 == 0
                clicked = int(liked if rng.random() < 0.85 else not liked)
                clicks.append(f"c{u},p{i},cat{i % 4},\"t{i % 5};t{i % 3}\",{clicked},{1700000000 + 1000 * u + i}")
    write_lines(directory / "customers.csv", customers, encoding="utf-8")
    write_lines(directory / "clicks.csv", clicks, encoding="utf-8")
    return directory


ML25M_SPEC = """\
name = "ml25m"

[label]
kind = "rating"
min = 0.5
max = 5
step = 0.5

[interactions]
file = "ratings.csv"
user_id = "userId"
item_id = "movieId"
label = "rating"
timestamp = "timestamp"

[users.features]
user = { type = "categorical", column = "userId" }  # no user file: the id is the only user feature

[items]
file = "movies.csv"
id = "movieId"
display = ["title"]

[items.features]
genres = { type = "multi", delimiter = "|", missing = ["(no genres listed)"] }  # no genre, not a genre
"""


def ml25m_dir(root: Path, n_users: int = 40, n_items: int = 24, seed: int = 0) -> Path:
    """A MovieLens-20M/25M/latest style directory (ratings.csv with a header and half stars written
    '4.0'; movies.csv with titles quoted when they hold a comma or a quote, '|' genres and
    '(no genres listed)'), and a dataset.toml without user features and without [groups]."""
    import random

    rng = random.Random(seed)
    directory = root / "ml25m"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dataset.toml").write_text(ML25M_SPEC, encoding="utf-8")
    genres = ("Action", "Comedy", "Drama", "Sci-Fi", "Children")
    titles = {1: '"American President, The (1995)"', 2: '"""Great Performances"" Cats (1998)"', 3: '"Misérables, Les (1995)"'}
    movies = ["movieId,title,genres"]
    for i in range(1, n_items + 1):
        title = titles.get(i, f"Film {i} (19{60 + i % 40})")
        movies.append(f"{i},{title},{'(no genres listed)' if i % 11 == 0 else genres[i % 5] + '|' + genres[(i * 3) % 5]}")
    ratings = ["userId,movieId,rating,timestamp"]
    for u in range(1, n_users + 1):
        for i in sorted(rng.sample(range(1, n_items + 1), min(n_items, 3 + u % 8))):
            taste = 0.5 + ((u % 4) + (i % 5)) % 5 + rng.choice((0.0, 0.5))
            ratings.append(f"{u},{i},{min(5.0, taste):.1f},{1147880044 + 1000 * u + i}")
    write_lines(directory / "movies.csv", movies, encoding="utf-8")
    write_lines(directory / "ratings.csv", ratings, encoding="utf-8")
    return directory



def yelp_spec(reviews: str, users: str, businesses: str) -> str:
    """The spec of Yelp's reviews, users and businesses (docs/data.md, "Recipes"): the same fields whether the
    files are the JSON lines Yelp ships or a CSV export of them; only their names differ."""
    return f"""\
name = "yelp"
label = {{ kind = "rating", min = 1, max = 5 }}

[interactions]
file = "{reviews}"
user_id = "user_id"
item_id = "business_id"
label = "stars"
timestamp = "date"
timestamp_format = "%Y-%m-%d %H:%M:%S"

[users]
file = "{users}"
id = "user_id"

[users.features]
review_count = {{ type = "numeric", min = 0, max = 100000, bins = [5, 20] }}
fans = {{ type = "numeric", integer = true, min = 0, max = 100000 }}
elite = {{ type = "categorical", missing = [] }}  # blank: never elite, a value

[items]
file = "{businesses}"
id = "business_id"
display = ["name"]

[items.features]
categories = {{ type = "multi", delimiter = ", " }}
city = {{ type = "categorical" }}

[groups]
features = ["review_count", "fans", "elite"]
"""

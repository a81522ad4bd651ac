"""WebShop page rendering: the exact ` [SEP] ` text and clickables upstream's text mode produces."""

from dreamgym.envs.webshop import pages as P

PRODUCT = {"asin": "B000000001", "Title": "Earth Mama Deodorant 3 Ounce", "Price": "$10.99", "Rating": "N.A.",
           "options": {"scent": ["bright citrus", "lavender"], "size": ["3 ounce (pack of 1)"]},
           "Description": "A gentle deodorant.", "BulletPoints": ["natural", "long lasting"],
           "Reviews": [{"title": "Great", "score": 5, "body": "works"}]}


def test_search_page():
    page = P.search_page("i need a deodorant")
    assert page.observation == "WebShop [SEP] Instruction: [SEP] i need a deodorant [SEP] Search"
    assert page.has_search_bar and page.clickables == ["search"]


def test_results_page_pagination_and_products():
    first = P.results_page("i need x", [PRODUCT], page=1, total=50, per_page=10)
    assert first.observation == ("Instruction: [SEP] i need x [SEP] Back to Search [SEP] Page 1 (Total results: 50) "
                                 "[SEP] Next > [SEP] B000000001 [SEP] Earth Mama Deodorant 3 Ounce [SEP] $10.99")
    assert first.clickables == ["back to search", "next >", "b000000001"]
    last = P.results_page("i need x", [PRODUCT], page=5, total=50, per_page=10)
    assert last.clickables == ["back to search", "< prev", "b000000001"]
    assert "Page 5 (Total results: 50) [SEP] < Prev [SEP] B000000001" in last.observation


def test_item_page_options_and_buttons():
    page = P.item_page("i need x", PRODUCT)
    assert page.observation == (
        "Instruction: [SEP] i need x [SEP] Back to Search [SEP] < Prev [SEP] scent [SEP] bright citrus [SEP] lavender "
        "[SEP] size [SEP] 3 ounce (pack of 1) [SEP] Earth Mama Deodorant 3 Ounce [SEP] Price: $10.99 [SEP] "
        "Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now")
    assert page.clickables == ["back to search", "< prev", "description", "features", "reviews", "buy now",
                               "bright citrus", "lavender", "3 ounce (pack of 1)"]
    assert page.option_group("lavender") == "scent" and page.option_group("nope") is None
    assert 'name="scent" value="lavender"' in page.html()


def test_sub_pages():
    assert P.sub_page("i", PRODUCT, "Description").observation.endswith("< Prev [SEP] A gentle deodorant.")
    assert P.sub_page("i", PRODUCT, "Features").observation.endswith("< Prev [SEP] natural [SEP] long lasting")
    assert P.sub_page("i", PRODUCT, "Reviews").observation.endswith('< Prev [SEP] "Great" [SEP] 5 [SEP] works')
    assert P.sub_page("i", {**PRODUCT, "Reviews": []}, "Reviews").observation.endswith("No reviews found")
    assert P.sub_page("i", {**PRODUCT, "Description": ""}, "Description").observation.endswith("< Prev")


def test_done_page_shows_score():
    page = P.done_page("B000000001", {"size": "3 ounce (pack of 1)"}, 0.75)
    assert page.observation.startswith("Thank you for shopping with us! [SEP] Your code: [SEP] None")
    assert "options [SEP] {\"size\": \"3 ounce (pack of 1)\"}" in page.observation
    assert page.observation.endswith("Your score (min 0.0, max 1.0) [SEP] 0.75 [SEP] Reward Details [SEP] None")
    assert page.clickables == []

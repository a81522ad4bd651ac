"""Vocabulary of the generated WebShop catalog: product types (the search term each product was
"scraped" with), their category paths, type-specific attributes and purchase options, plus the
brand syllables, filler sentences and phrasing templates `generate.py` draws from.

Design rules the generator relies on (checked by the catalog tests through their effects):
- within a type no attribute is a word-subset of another (the reward's fuzzy match would merge them),
  and a type's title nouns, option values and fillers never contain an attribute of that type, so a
  product's text mentions only the attributes it really has;
- option values are written the way Amazon pages show them ('X-Large', 'Black/White', '12 Pack');
  the loader lower-cases them and turns '/' into ' | ' as upstream does;
- within an option, no two values collapse under upstream's `normalize_color` (first COLOR_SET word
  found as a substring: 'Navy Blue' -> 'blue', 'Light Wash' -> 'ash') or fuzzy-match each other, and
  the generator keeps a product's normalized option values out of its own title/bullets/description
  (upstream's option reward also counts a purchased value found there as a match).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProductType", "PRODUCT_TYPES", "CATEGORIES", "BRAND_HEADS", "BRAND_TAILS", "TITLE_WORDS",
           "FILLERS", "REVIEW_TITLES", "REVIEW_BODIES", "INSTRUCTION_TEMPLATES", "ACRONYMS",
           "UPSTREAM_COLOR_SET", "upstream_normalize_color"]

CATEGORIES = ("beauty", "electronics", "fashion", "food", "furniture")
"""upstream WebShop's five top-level categories"""


@dataclass(frozen=True)
class ProductType:
    """One kind of product: every product of the catalog is an instance of exactly one type."""

    category: str
    query: str
    """the search term upstream scraped the product with (the record's `query`)"""
    nouns: tuple[str, ...]
    """title nouns; the first one is also how instructions usually name the type"""
    path: str
    """product_category levels joined by ' › '"""
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]
    """(option name as the raw file spells it, value pool in display order); the first is always offered"""
    price: tuple[float, float]
    blurb: str
    """one sentence tail about what the product does, free of attribute words"""


def _t(category: str, query: str, nouns: str, path: str, attributes: str, options: dict[str, str],
       price: tuple[float, float], blurb: str) -> ProductType:
    split = lambda s, sep: tuple(x.strip() for x in s.split(sep) if x.strip())  # noqa: E731
    return ProductType(category, query, split(nouns, ","), " › ".join(split(path, ">")),
                       split(attributes, ","), tuple((k, split(v, ";")) for k, v in options.items()),
                       price, blurb)


PRODUCT_TYPES: tuple[ProductType, ...] = (
    # -- beauty ------------------------------------------------------------------------------------
    _t("beauty", "deodorant", "Deodorant, Deodorant Stick",
       "Beauty & Personal Care > Personal Care > Deodorants & Antiperspirants > Deodorant",
       "long lasting, aluminum free, paraben free, cruelty free, sensitive skin, natural ingredients, "
       "baking soda free",
       {"Scent": "Lavender; Unscented; Fresh Citrus; Coconut Vanilla; Cedarwood; Eucalyptus Mint; Rose",
        "Size": "2.6 Ounce; 3 Ounce (Pack of 2); 2.65 Ounce (Pack of 3); 1 Ounce"},
       (5, 22), "keeps you feeling fresh from a morning workout to a late dinner"),
    _t("beauty", "shampoo", "Shampoo, Shampoo and Conditioner Set",
       "Beauty & Personal Care > Hair Care > Shampoo & Conditioner > Shampoos",
       "sulfate free, paraben free, hair growth, dry hair, color treated, tea tree, argan oil, cruelty free",
       {"Scent": "Coconut; Peppermint; Lavender; Unscented; Citrus; Vanilla",
        "Size": "8 Fl Oz; 12 Fl Oz; 16.9 Fl Oz; 33.8 Fl Oz"},
       (7, 35), "cleanses gently and leaves every strand soft and manageable"),
    _t("beauty", "lipstick", "Lipstick, Matte Lipstick, Liquid Lipstick",
       "Beauty & Personal Care > Makeup > Lips > Lipstick",
       "long lasting, cruelty free, highly pigmented, easy to apply, paraben free, waterproof",
       {"Color": "Ruby Red; Nude Pink; Berry; Coral; Mauve; Plum; Rose Gold; Wine",
        "Size": "0.12 Ounce; 0.12 Ounce (Pack of 3)"},
       (6, 28), "glides on smoothly for a bold look that lasts through coffee and lunch"),
    _t("beauty", "face moisturizer", "Face Moisturizer, Face Cream, Moisturizing Cream",
       "Beauty & Personal Care > Skin Care > Face > Creams & Moisturizers",
       "fine lines, dry skin, hyaluronic acid, fragrance free, oil free, sensitive skin, anti aging, vitamin c",
       {"Size": "1 Ounce; 1.7 Ounce; 2.5 Ounce; 3.4 Ounce",
        "Style": "Daily Lotion; Overnight Mask; Gel Cream; Balm"},
       (12, 48), "absorbs quickly and leaves the complexion smooth and supple"),
    _t("beauty", "nail polish", "Nail Polish, Gel Nail Polish",
       "Beauty & Personal Care > Foot, Hand & Nail Care > Nail Art & Polish > Nail Polish",
       "long lasting, quick drying, non toxic, high gloss, chip resistant, easy to apply",
       {"Color": "Red; Nude; Baby Pink; Lilac; Navy; Gold Glitter; Black; Coral",
        "Size": "0.5 Fl Oz; 6 Pack; 12 Pack"},
       (5, 25), "brings salon style color to your fingertips at home"),
    _t("beauty", "hair dryer", "Hair Dryer, Blow Dryer",
       "Beauty & Personal Care > Hair Care > Styling Tools & Appliances > Hair Dryers",
       "ionic technology, fast drying, lightweight, low noise, easy to use, ceramic tourmaline, foldable handle",
       {"Color": "Black; White; Rose Gold; Pink; Purple; Silver",
        "Style": "With Diffuser; With Concentrator; Travel Size"},
       (20, 90), "styles hair smoothly with three heat settings and two speeds"),
    _t("beauty", "makeup brush set", "Makeup Brush Set, Makeup Brushes",
       "Beauty & Personal Care > Tools & Accessories > Makeup Brushes & Tools > Brush Sets",
       "synthetic hair, easy to clean, cruelty free, travel case, high quality, soft bristles",
       {"Color": "Black/Gold; Rose Gold; Pink/White; Champagne; Marble White",
        "Size": "10 Pcs; 14 Pcs; 16 Pcs; 20 Pcs"},
       (9, 35), "blends foundation, powder and eyeshadow for a flawless finish"),
    _t("beauty", "false eyelashes", "False Eyelashes, Lashes, Mink Lashes",
       "Beauty & Personal Care > Makeup > Eyes > False Eyelashes & Adhesives > False Eyelashes",
       "easy to apply, reusable, natural look, cruelty free, lightweight, handmade",
       {"Style": "Wispy; Natural; Dramatic; Cat Eye; Fluffy",
        "Size": "5 Pairs; 10 Pairs; 16 Pairs"},
       (6, 22), "adds volume and length for weddings, parties and daily makeup"),
    # -- electronics -------------------------------------------------------------------------------
    _t("electronics", "wireless earbuds", "Wireless Earbuds, Bluetooth Earbuds",
       "Electronics > Headphones, Earbuds & Accessories > Headphones & Earbuds > Earbud Headphones",
       "noise cancelling, long battery life, fast charging, water resistant, hands free, stereo sound, "
       "touch control",
       {"Color": "Black; White; Navy Blue; Rose Gold; Midnight Green; Lavender"},
       (18, 120), "pairs instantly with phones, tablets and laptops"),
    _t("electronics", "usb c cable", "USB C Cable, USB C Charger Cable, Type C Charging Cable",
       "Electronics > Computers & Accessories > Computer Accessories & Peripherals > Cables & Accessories "
       "> USB Cables",
       "fast charging, high speed, braided nylon, durable, data sync, tangle free",
       {"Size": "3 Ft; 6 Ft; 10 Ft; 3 Ft + 6 Ft + 10 Ft",
        "Color": "Black; White; Grey; Red; Blue",
        "Style": "1 Pack; 2 Pack; 3 Pack; 5 Pack"},
       (6, 20), "works with phones, tablets, laptops and game controllers"),
    _t("electronics", "hdmi cable", "HDMI Cable, HDMI Cord",
       "Electronics > Television & Video > Accessories > Cables > HDMI Cables",
       "high speed, 4k ultra hd, gold plated, ethernet support, high definition, braided cord",
       {"Size": "3 Ft; 6 Ft; 10 Ft; 15 Ft; 25 Ft",
        "Style": "1 Pack; 2 Pack; 3 Pack"},
       (6, 25), "connects TVs, monitors, projectors and game consoles"),
    _t("electronics", "phone case", "Phone Case, Protective Case, Cell Phone Case",
       "Electronics > Cell Phones & Accessories > Cases, Holsters & Sleeves > Basic Cases",
       "shockproof, wireless charging, slim fit, easy install, scratch resistant, military grade, raised edges",
       {"Style": "iPhone 13; iPhone 14 Pro; iPhone 15 Plus; Galaxy S23; Galaxy S24 Ultra; Pixel 8",
        "Color": "Black; Clear; Navy Blue; Pink; Purple; Mint Green; Red"},
       (8, 30), "keeps every button and port within easy reach"),
    _t("electronics", "power bank", "Power Bank, Portable Charger",
       "Electronics > Cell Phones & Accessories > Chargers & Power Adapters > Portable Power Banks",
       "fast charging, high capacity, usb c, led display, compact size, dual output",
       {"Size": "5000mAh; 10000mAh; 20000mAh; 26800mAh",
        "Color": "Black; White; Blue; Pink; Green"},
       (15, 60), "recharges phones and tablets on trips, commutes and camping weekends"),
    _t("electronics", "security camera", "Security Camera, Home Security Camera, WiFi Camera",
       "Electronics > Camera & Photo > Video Surveillance > Surveillance Cameras > Dome Cameras",
       "high resolution, night vision, motion detection, two way audio, easy install, weatherproof, "
       "cloud storage",
       {"Size": "1 Cam; 2 Cam; 4 Cam",
        "Color": "White; Black"},
       (25, 160), "lets you check on your home, pets and packages from the app"),
    _t("electronics", "bluetooth speaker", "Bluetooth Speaker, Portable Speaker, Wireless Speaker",
       "Electronics > Portable Audio & Video > Portable Speakers & Docks > Portable Bluetooth Speakers",
       "waterproof, long battery life, high fidelity, deep bass, stereo sound, built in microphone",
       {"Color": "Black; Blue; Red; Camo Green; Grey; Teal"},
       (20, 110), "fills the room for backyard parties, beach days and showers"),
    _t("electronics", "screen protector", "Screen Protector",
       "Electronics > Computers & Accessories > Tablet Accessories > Screen Protectors",
       "tempered glass, easy install, high definition, scratch resistant, bubble free, case friendly",
       {"Size": "iPad 10.2 Inch; iPad Air 10.9 Inch; iPad Pro 11 Inch; iPad Pro 12.9 Inch; Galaxy Tab S9",
        "Style": "1 Pack; 2 Pack; 3 Pack"},
       (7, 22), "comes with an alignment frame, cleaning wipes and dust stickers"),
    # -- fashion -----------------------------------------------------------------------------------
    _t("fashion", "t-shirt", "T-Shirt, Tee Shirt, Crew Neck T-Shirt",
       "Clothing, Shoes & Jewelry > Men > Clothing > Shirts > T-Shirts",
       "machine wash, short sleeve, cotton spandex, slim fit, moisture wicking, classic fit, tumble dry",
       {"Color": "Black; White; Heather Grey; Navy Blue; Army Green; Burgundy; Mustard; Charcoal",
        "Size": "Small; Medium; Large; X-Large; XX-Large; 3X-Large"},
       (8, 30), "is a wardrobe staple for the gym, the office or the weekend"),
    _t("fashion", "running shoes", "Running Shoes, Sneakers, Walking Shoes",
       "Clothing, Shoes & Jewelry > Women > Shoes > Athletic > Running",
       "non slip, rubber sole, lightweight, arch support, breathable mesh, memory foam, lace up",
       {"Color": "Olive; White; Grey/Pink; Black/White; Navy; Beige",
        "Size": "6; 6.5; 7; 7.5; 8; 8.5; 9; 9.5; 10; 11"},
       (25, 95), "carries you through jogging, gym sessions and long walks"),
    _t("fashion", "dress", "Dress, Maxi Dress, Midi Dress, Sundress",
       "Clothing, Shoes & Jewelry > Women > Clothing > Dresses > Casual",
       "machine wash, polyester spandex, short sleeve, elastic waist, v neck, daily wear, side pockets",
       {"Color": "Black; Navy Blue; Wine Red; Dusty Pink; Sage Green; Leopard; Floral Yellow; Khaki",
        "Size": "Small; Medium; Large; X-Large; XX-Large"},
       (20, 55), "is flattering for brunch, vacations, parties and the beach"),
    _t("fashion", "jeans", "Jeans, Denim Jeans, Straight Leg Jeans",
       "Clothing, Shoes & Jewelry > Men > Clothing > Jeans",
       "machine wash, slim fit, button closure, stretch fabric, relaxed fit, five pocket, high rise",
       {"Color": "Light Wash; Dark Indigo; Black; Rinse Denim; Medium Indigo; Grey",
        "Size": "28W x 30L; 30W x 32L; 32W x 32L; 34W x 30L; 34W x 32L; 36W x 32L; 38W x 30L"},
       (25, 70), "pairs with sneakers or boots for an easy everyday outfit"),
    _t("fashion", "hoodie", "Hoodie, Pullover Hoodie, Hooded Sweatshirt",
       "Clothing, Shoes & Jewelry > Men > Clothing > Fashion Hoodies & Sweatshirts",
       "machine wash, long sleeve, drawstring closure, fleece lined, relaxed fit, kangaroo pocket",
       {"Color": "Black; Heather Grey; Navy; Maroon; Forest Green; Oatmeal; Charcoal",
        "Size": "Small; Medium; Large; X-Large; XX-Large"},
       (18, 55), "keeps you cozy on chilly mornings and lazy evenings"),
    _t("fashion", "athletic socks", "Athletic Socks, Crew Socks, Ankle Socks",
       "Clothing, Shoes & Jewelry > Men > Clothing > Socks > Athletic Socks",
       "moisture wicking, machine wash, cushioned sole, arch support, breathable, odor control",
       {"Color": "Black; White; Grey; Assorted; Multicolor; Pink/Blue",
        "Size": "Medium; Large; X-Large",
        "Style": "6 Pairs; 12 Pairs; Value Pack"},
       (10, 28), "stays comfortable during running, hiking and basketball"),
    _t("fashion", "sunglasses", "Sunglasses, Aviator Sunglasses, Retro Sunglasses",
       "Clothing, Shoes & Jewelry > Men > Accessories > Sunglasses & Eyewear Accessories > Sunglasses",
       "polarized lenses, uv protection, lightweight, scratch resistant, metal frame, spring hinges",
       {"Color": "Black/Grey; Gold/Green; Silver/Blue Mirror; Tortoise/Brown; Clear/Pink"},
       (12, 45), "cuts glare while driving, fishing, golfing and cycling"),
    _t("fashion", "rain jacket", "Rain Jacket, Raincoat, Windbreaker Jacket",
       "Clothing, Shoes & Jewelry > Women > Clothing > Coats, Jackets & Vests > Raincoats",
       "waterproof, windproof, zipper closure, hooded, packable, lightweight, machine wash",
       {"Color": "Black; Navy; Olive Green; Yellow; Red; Light Pink",
        "Size": "Small; Medium; Large; X-Large; XX-Large"},
       (25, 80), "is ready for hiking, travel and commuting in stormy weather"),
    # -- food --------------------------------------------------------------------------------------
    _t("food", "protein bar", "Protein Bar, Protein Bars, Snack Bar",
       "Grocery & Gourmet Food > Snacks & Sweets > Snack Bars > Protein Bars",
       "gluten free, high protein, low sugar, non gmo, keto friendly, plant based, individually wrapped",
       {"Flavor Name": "Chocolate Chip; Cookie Dough; Salted Caramel; Birthday Cake; Peanut Butter; "
                       "Lemon Zest; Blueberry Muffin",
        "Size": "12 Pack; 15 Pack; 24 Pack"},
       (15, 40), "makes a filling snack after workouts or between meetings"),
    _t("food", "coffee", "Ground Coffee, Coffee, Whole Bean Coffee",
       "Grocery & Gourmet Food > Beverages > Coffee, Tea & Cocoa > Coffee > Ground Coffee",
       "fair trade, medium roast, usda organic, arabica beans, low acid, kosher certified, small batch",
       {"Flavor Name": "French Vanilla; Hazelnut; Caramel; Original; Mocha; Breakfast Blend; Colombian",
        "Size": "12 Ounce; 12 Ounce (Pack of 3); 2 Pound; 32 Ounce"},
       (8, 35), "brews a smooth, rich cup in drip machines and French presses"),
    _t("food", "herbal tea", "Herbal Tea, Tea Bags, Green Tea",
       "Grocery & Gourmet Food > Beverages > Coffee, Tea & Cocoa > Tea > Herbal",
       "caffeine free, usda organic, non gmo, individually wrapped, gluten free, kosher certified",
       {"Flavor Name": "Peppermint; Chamomile; Lemon Ginger; Jasmine; Hibiscus; Honey Lavender; Earl Grey",
        "Size": "20 Count; 40 Count; 100 Count; 20 Count (Pack of 6)"},
       (5, 25), "steeps in three minutes for a calming cup at any hour"),
    _t("food", "beef jerky", "Beef Jerky, Jerky, Beef Sticks",
       "Grocery & Gourmet Food > Snacks & Sweets > Jerky & Dried Meats > Jerky",
       "high protein, low carb, gluten free, grass fed, keto friendly, resealable bag",
       {"Flavor Name": "Original; Teriyaki; Peppered; Sweet & Spicy; Sriracha; Hickory Smoked",
        "Size": "2.5 Ounce; 3.25 Ounce (Pack of 4); 10 Ounce; 1 Pound"},
       (8, 40), "is marinated and slow cooked for a tender, savory bite"),
    _t("food", "potato chips", "Potato Chips, Chips, Crisps",
       "Grocery & Gourmet Food > Snacks & Sweets > Chips & Crisps > Potato Chips",
       "gluten free, non gmo, low calorie, kosher certified, baked, no artificial flavors",
       {"Flavor Name": "Sea Salt; Sour Cream & Onion; Barbecue; Salt & Vinegar; Jalapeno; Cheddar; Dill Pickle",
        "Size": "1 Ounce (Pack of 24); 2 Ounce (Pack of 8); 5 Ounce (Pack of 6); 8 Ounce"},
       (10, 30), "delivers a crunchy snack for lunch boxes, parties and road trips"),
    _t("food", "olive oil", "Olive Oil, Cooking Oil",
       "Grocery & Gourmet Food > Pantry Staples > Cooking & Baking > Oils > Olive",
       "extra virgin, cold pressed, non gmo, usda organic, kosher certified, glass bottle",
       {"Size": "16.9 Fl Oz; 25.4 Fl Oz; 33.8 Fl Oz; 68 Fl Oz; 101 Fl Oz",
        "Flavor Name": "Original; Garlic; Lemon; Basil; Chili"},
       (9, 45), "is great for salads, sauteing, roasting and dipping bread"),
    _t("food", "gummy candy", "Gummy Candy, Gummies, Gummy Bears",
       "Grocery & Gourmet Food > Snacks & Sweets > Candy & Chocolate > Gummy Candy",
       "gluten free, fat free, individually wrapped, gelatin free, real fruit juice, no artificial colors",
       {"Flavor Name": "Sour; Assorted Fruit; Peach Rings; Watermelon; Cherry; Tropical",
        "Size": "5 Ounce; 2 Pound; 5 Pound; 1 Ounce (Pack of 30)"},
       (6, 30), "is a chewy treat for movie nights, parties and candy buffets"),
    _t("food", "mixed nuts", "Mixed Nuts, Almonds, Cashews, Trail Mix",
       "Grocery & Gourmet Food > Snacks & Sweets > Snack Foods > Nuts & Seeds > Mixed Nuts",
       "non gmo, low sodium, dry roasted, high protein, resealable bag, kosher certified",
       {"Flavor Name": "Sea Salt; Honey Roasted; Unsalted; Smoked; Lightly Salted; Cinnamon",
        "Size": "16 Ounce; 2 Pound; 3 Pound; 1.5 Ounce (Pack of 24)"},
       (10, 40), "is a crunchy snack for the office, hiking trail or pantry"),
    # -- furniture ---------------------------------------------------------------------------------
    _t("furniture", "office chair", "Office Chair, Desk Chair, Computer Chair",
       "Home & Kitchen > Furniture > Home Office Furniture > Home Office Chairs > Home Office Desk Chairs",
       "lumbar support, easy assemble, height adjustable, ergonomic design, mesh back, heavy duty, "
       "swivel wheels",
       {"Color": "Black; Grey; White; Blue; Pink; Beige",
        "Style": "With Armrests; Armless; With Footrest; Flip Up Arms"},
       (60, 250), "keeps you comfortable through long work and gaming sessions"),
    _t("furniture", "bookshelf", "Bookshelf, Bookcase, Book Shelf",
       "Home & Kitchen > Furniture > Home Office Furniture > Bookcases",
       "easy assemble, engineered wood, storage space, heavy duty, anti tip, metal frame",
       {"Color": "Espresso; White; Rustic Brown; Black; Walnut; Oak; Grey Wash",
        "Size": "3-Tier; 4-Tier; 5-Tier; 6-Tier"},
       (40, 180), "displays books, plants and photos in a study or bedroom"),
    _t("furniture", "dining chairs", "Dining Chairs, Kitchen Chairs, Side Chairs",
       "Home & Kitchen > Furniture > Kitchen & Dining Room Furniture > Chairs",
       "easy assemble, solid wood, upholstered seat, mid century, heavy duty, faux leather",
       {"Color": "Grey; Beige; Black; Navy Blue; Green; Cream; Walnut",
        "Size": "Set of 2; Set of 4; Set of 6"},
       (70, 320), "seats family and guests for everyday meals and holidays"),
    _t("furniture", "coffee table", "Coffee Table, Center Table, Cocktail Table",
       "Home & Kitchen > Furniture > Living Room Furniture > Tables > Coffee Tables",
       "easy assemble, storage space, engineered wood, mid century, living room, tempered glass, lift top",
       {"Color": "Rustic Brown; Black; White; Walnut; Grey Oak; Espresso",
        "Style": "Round; Rectangle; Oval; Square"},
       (50, 220), "holds drinks, magazines and remotes within reach of the sofa"),
    _t("furniture", "bed frame", "Bed Frame, Platform Bed Frame, Platform Bed",
       "Home & Kitchen > Furniture > Bedroom Furniture > Beds, Frames & Bases > Beds",
       "easy assemble, heavy duty, no box spring needed, metal frame, noise free, under bed storage, "
       "wood slat support",
       {"Size": "Twin; Full; Queen; King; California King",
        "Color": "Black; White; Grey; Brown; Dark Grey"},
       (90, 400), "gives your mattress a sturdy, stylish base"),
    _t("furniture", "tv stand", "TV Stand, Entertainment Center, TV Console",
       "Home & Kitchen > Furniture > Living Room Furniture > Television Stands & Entertainment Centers",
       "storage space, easy assemble, cable management, engineered wood, led lights, open shelves",
       {"Color": "Black; White; Rustic Oak; Walnut; Grey; Espresso",
        "Size": "55 Inch; 65 Inch; 70 Inch; 80 Inch"},
       (70, 300), "organizes consoles, streaming boxes and speakers under the screen"),
    _t("furniture", "shoe rack", "Shoe Rack, Shoe Organizer, Shoe Shelf",
       "Home & Kitchen > Storage & Organization > Clothing & Closet Storage > Shoe Organizers",
       "easy assemble, space saving, stackable, metal frame, bamboo wood, waterproof fabric",
       {"Color": "Black; White; Grey; Natural; Brown",
        "Size": "3-Tier; 4-Tier; 5-Tier; 6-Tier; 10-Tier"},
       (15, 60), "tidies sneakers, boots and heels in the entryway or closet"),
    _t("furniture", "bar stools", "Bar Stools, Counter Stools, Barstools",
       "Home & Kitchen > Furniture > Game & Recreation Room Furniture > Home Bar Furniture > Barstools",
       "height adjustable, swivel seat, easy to clean, back support, faux leather, heavy duty",
       {"Color": "Black; White; Grey; Brown; Beige",
        "Size": "Set of 2; Set of 3; Set of 4"},
       (60, 260), "adds extra seating at the kitchen island, counter or home bar"),
)

BRAND_HEADS = ("Lum", "Ver", "Nor", "Bri", "Cal", "Zen", "Aur", "Kel", "Mar", "Sol", "Tor", "Vel", "Ori",
               "Hal", "Pax", "Dun", "Fen", "Gal", "Ivo", "Jas", "Kor", "Lio", "Mon", "Nev", "Oak", "Pri",
               "Qui", "Ros", "Sav", "Tav", "Ulm", "Vio", "Wes", "Yar", "Zor", "Ash", "Bel", "Cor")
BRAND_TAILS = ("avera", "ella", "ora", "ix", "ona", "ridge", "wick", "tek", "ana", "ello", "ivo", "stone",
               "field", "vale", "mont", "aro", "uma", "etta", "ique", "ova", "ax", "era", "ino", "well")
TITLE_WORDS = ("Premium", "Classic", "Everyday", "Pro", "Deluxe", "Essential", "Heritage", "Signature",
               "Ultra", "Plus", "Max", "Elite", "Basics", "Select", "Studio", "Prime", "Nova", "Urban")
UPSTREAM_COLOR_SET = (
    "alabaster apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown burgundy "
    "camel camo caramel champagne charcoal cheetah chestnut chocolate christmas coffee cognac copper coral "
    "cranberry cream crystal dark denim eggplant elephant espresso fuchsia gold granite grape graphite grass "
    "gray green grey heather indigo ivory ivy khaki lavender lemon leopard light lilac lime magenta maroon "
    "mauve merlot midnight mint mocha multicolor mushroom mustard natural navy nude olive orange peach pewter "
    "pink plum purple rainbow red rose royal rust sand sapphire seashell silver skull slate steel stone "
    "stonewash sunflower tan taupe teal tiger turquoise violet walnut wheat white wine yellow").split()
"""upstream web_agent_site/engine/normalize.py COLOR_SET, in its order (used to vet option values)"""


def upstream_normalize_color(value: str) -> str:
    """Upstream normalize_color: the first COLOR_SET word contained in `value`, else `value`."""
    return next((c for c in UPSTREAM_COLOR_SET if c in value), value)


ACRONYMS = frozenset({"usda", "gmo", "uv", "hd", "led", "usb", "4k", "spf", "tv", "hdmi"})

FILLERS: dict[str, tuple[str, ...]] = {
    "beauty": ("Dermatologist reviewed formula suitable for everyday routines.",
               "Packaged in a recyclable container that fits in any bag.",
               "A thoughtful gift for birthdays, holidays and anniversaries.",
               "Made in a certified facility with strict quality checks.",
               "Loved by makeup artists and beginners alike.",
               "Backed by our 30 day satisfaction promise."),
    "electronics": ("Backed by an 18 month warranty and friendly customer support.",
                    "Compatible with the most popular devices and operating systems.",
                    "Tested for thousands of cycles before leaving the factory.",
                    "The package includes a quick start guide.",
                    "A smart gift for students, gamers and travelers.",
                    "Certified for safety by independent labs."),
    "fashion": ("Tailored with a modern cut that flatters every body type.",
                "Pairs easily with the rest of your wardrobe.",
                "A great gift for husbands, wives, friends and family.",
                "Please check the size chart in the images before ordering.",
                "Soft fabric that feels comfortable from the first wear.",
                "Stitched carefully so it keeps its shape season after season."),
    "food": ("Made in small kitchens with carefully sourced ingredients.",
             "Perfect for the pantry, the office drawer or a picnic basket.",
             "A tasty gift basket addition for holidays and celebrations.",
             "Packed fresh and sealed to lock in flavor.",
             "Enjoyed by kids and grown ups alike.",
             "Proudly produced by a family owned company."),
    "furniture": ("Sturdy construction supports daily use for years.",
                  "All hardware and step by step instructions are included.",
                  "Fits modern, farmhouse and industrial decor.",
                  "Wipe with a damp cloth to keep it looking new.",
                  "Arrives in one carefully packed box.",
                  "Our support team answers questions within 24 hours."),
}

REVIEW_TITLES: dict[int, tuple[str, ...]] = {
    5: ("Love it", "Exactly what I wanted", "Best purchase this year", "Highly recommend"),
    4: ("Very good", "Works well", "Nice quality", "Happy with it"),
    3: ("It's okay", "Decent for the money", "Average"),
    2: ("Not great", "Expected more"),
    1: ("Disappointed", "Would not buy again"),
}
REVIEW_BODIES: dict[int, tuple[str, ...]] = {
    5: ("This {noun} is fantastic and arrived quickly. I already ordered a second one.",
        "I have tried many brands and this {noun} is by far my favorite.",
        "Great {noun}, exactly as described in the listing."),
    4: ("Good {noun} overall. Shipping took a little longer than expected.",
        "Solid {noun} for daily use, I would buy it again."),
    3: ("The {noun} is fine but nothing special.",
        "It does the job, although the packaging was damaged."),
    2: ("The {noun} looked different from the pictures.",
        "Quality of this {noun} is lower than I hoped."),
    1: ("My {noun} stopped being usable after a week.",
        "Returned this {noun} the same day it arrived."),
}

INSTRUCTION_TEMPLATES: tuple[str, ...] = (
    "i am looking for {a}{attrs} {noun}{opts}",
    "i need {a}{attrs} {noun}{opts}",
    "i want {a}{attrs} {noun}{opts}",
    "find me {a}{attrs} {noun}{opts}",
    "i'm looking for {a}{attrs} {noun}{opts}",
    "i would like to buy {a}{attrs} {noun}{opts}",
    "please get me {a}{attrs} {noun}{opts}",
    "i'd like {a}{attrs} {noun}{opts}",
)
"""human-style instruction frames; {a} is 'a '/'an '/'' (plural nouns), {opts} starts with a space"""

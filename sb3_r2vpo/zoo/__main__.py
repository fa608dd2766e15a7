from sb3_r2vpo.zoo.cli import main

main()
